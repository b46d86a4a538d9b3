import { createContext, useCallback, useContext, useEffect, useSyncExternalStore } from "react";
import { ANNOUNCE_KEY, HEALTH_KEY, STATUS_KEY, type LiveStore, rankKey, seasonKey, topKey } from "./store";
import type { Toast } from "./toasts";

export const StoreContext = createContext<LiveStore | null>(null);

export function useStore(): LiveStore {
  const store = useContext(StoreContext);
  if (!store) throw new Error("useStore outside <StoreContext.Provider>");
  return store;
}

export function useConnStatus() {
  const store = useStore();
  const subscribe = useCallback((cb: () => void) => store.listen(STATUS_KEY, cb), [store]);
  return useSyncExternalStore(subscribe, () => store.getStatus());
}

/** What the server says about its dependencies (status frame, else /readyz). */
export function useHealth() {
  const store = useStore();
  const subscribe = useCallback((cb: () => void) => store.listen(HEALTH_KEY, cb), [store]);
  return useSyncExternalStore(subscribe, () => store.getHealth());
}

/** Subscribe to a board's live top-N while mounted; re-renders only on that board's snapshots. */
export function useTop(board: string, limit = 10) {
  const store = useStore();
  useEffect(() => store.watchTop(board, limit), [store, board, limit]);
  const subscribe = useCallback((cb: () => void) => store.listen(topKey(board), cb), [store, board]);
  return useSyncExternalStore(subscribe, () => store.getTop(board));
}

export function useTopError(board: string) {
  const store = useStore();
  const key = topKey(board);
  const subscribe = useCallback((cb: () => void) => store.listenError(key, cb), [store, key]);
  return useSyncExternalStore(subscribe, () => store.getError(key));
}

/** Follow one player's rank while mounted (userId null: follow nobody). */
export function useRank(board: string, userId: string | null, label?: string) {
  const store = useStore();
  useEffect(() => (userId ? store.watchRank(board, userId) : undefined), [store, board, userId]);
  useEffect(() => {
    if (userId && label) store.setRankLabel(board, userId, label);
  }, [store, board, userId, label]);
  const key = userId ? rankKey(board, userId) : "";
  const subscribe = useCallback((cb: () => void) => (key ? store.listen(key, cb) : () => {}), [store, key]);
  return useSyncExternalStore(subscribe, () => (userId ? store.getRank(board, userId) : undefined));
}

/** The last reset of this board seen on the socket (its `season` frame), or undefined. */
export function useSeasonEnd(board: string) {
  const store = useStore();
  const key = seasonKey(board);
  const subscribe = useCallback((cb: () => void) => store.listen(key, cb), [store, key]);
  return useSyncExternalStore(subscribe, () => store.getSeasonEnd(board));
}

export function useToasts(): readonly Toast[] {
  const store = useStore();
  return useSyncExternalStore(store.toasts.subscribe, store.toasts.getSnapshot);
}

export function useAnnouncement() {
  const store = useStore();
  const subscribe = useCallback((cb: () => void) => store.listen(ANNOUNCE_KEY, cb), [store]);
  return useSyncExternalStore(subscribe, () => store.getAnnouncement());
}
