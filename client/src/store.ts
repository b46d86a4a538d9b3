// The one module that owns the WebSocket. Components read per-topic state through `listen`/`get*`
// (wired to useSyncExternalStore in hooks.ts), so a rank push re-renders only what reads that rank.
//
// Connection state machine:
//   idle -> connecting -> connected -> (close) -> reconnecting(attempt n) -> connected ...
//   close 1008 (auth failed)  -> offline, no automatic retry (the user presses Retry or changes the key)
//   network offline           -> offline until the browser says it is online again
// Reconnect delay: full jitter, delay = random(0, min(cap, base * 2^attempt)), attempt reset on open.
// Every (re)connect resubscribes every topic; the server answers each subscribe with a fresh snapshot.
// A `top` snapshot whose seq is <= the last one applied for that board is dropped (seq only grows).
//
// Seasons: a `season` frame (a board was reset) is kept per board as a SeasonEnd (the ended season, the new live
// one, the top 3 of its final standings) and announced in the polite live region. The `top` snapshot of the new
// season that follows is an ordinary snapshot (seq keeps growing across seasons).
//
// Server health (health.ts): the `status` frame, which answers a subscribe to the `status` topic (sent on
// every connect) and comes again on every change. Until one
// arrives on the current socket, GET /readyz is probed at start (page load) and every `readyPollMs` while
// connected; a status frame on the socket wins over a probe answer and ends the polling.

import { probeReady } from "./api";
import type { TimerHandle, Timers } from "./clock";
import { type Health, UNKNOWN_HEALTH, healthFromFrame } from "./health";
import { nameOf } from "./format";
import { DEFAULT_TOAST_OPTIONS, ToastQueue, type ToastOptions } from "./toasts";
import type { Entry, ErrorPush, RankPush, SeasonPush, ServerFrame, TopPush } from "./types";

export const WS_OPEN = 1;

/** The part of the browser WebSocket the store uses. */
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 250, capMs: 10_000 };

/** Full-jitter exponential backoff: a uniform draw in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt: number, random: () => number, opts: BackoffOptions = DEFAULT_BACKOFF): number {
  const ceiling = Math.min(opts.capMs, opts.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

export interface StoreDeps {
  url: string;
  createSocket: (url: string) => SocketLike;
  timers: Timers;
  random: () => number;
  backoff?: BackoffOptions;
  /** Send a ping this often while connected; close and reconnect if nothing arrives for 2.5x as long. */
  heartbeatMs?: number;
  toasts?: ToastOptions;
  /** GET /readyz as health (null: inconclusive); the fallback for servers that send no `status` frame. */
  probeReady?: () => Promise<Health | null>;
  /** How often to probe while connected and no status frame has arrived (default 10 s). */
  readyPollMs?: number;
}

export type ConnState = "idle" | "connecting" | "connected" | "reconnecting" | "offline";

export interface ConnStatus {
  state: ConnState;
  /** The reconnect attempt in progress or scheduled (1-based), 0 when connected. */
  attempt: number;
  /** Why we are offline: "auth" (closed with 1008) or "network". */
  reason: "auth" | "network" | null;
  lastCloseCode: number | null;
  /** When the scheduled reconnect fires (timers.now() clock), or null. */
  retryAt: number | null;
}

export interface TopState {
  board: string;
  seq: number;
  total: number;
  entries: readonly Entry[];
  receivedAt: number;
}

export interface RankState {
  board: string;
  userId: string;
  rank: number | null;
  previousRank: number | null;
  score: number | null;
  seq: number | null;
  receivedAt: number;
}

/** The last reset of a board seen on the socket. */
export interface SeasonEnd {
  board: string;
  /** The season that ended. */
  ended: number;
  /** The season live since. */
  season: number;
  /** The top 3 of the ended season's final standings (empty: nobody scored in it; null: not sent). */
  winners: readonly Entry[] | null;
  receivedAt: number;
  /** The banner about it was closed (by the reader, or by time in TV mode). */
  dismissed: boolean;
}

/** What the live region says about a reset. */
export function seasonEndedText(end: Pick<SeasonEnd, "ended" | "season" | "winners">): string {
  const started = `Season ${end.season} has started.`;
  if (end.winners === null) return `Season ${end.ended} ended. ${started}`;
  if (end.winners.length === 0) return `Season ${end.ended} ended with no scores. ${started}`;
  return `Season ${end.ended} ended. Winners: ${end.winners.map((e) => `${e.rank} ${nameOf(e)}`).join(", ")}. ${started}`;
}

export interface Announcement {
  id: number;
  text: string;
}

type Sub =
  | { kind: "top"; board: string; limit: number; refs: number }
  | { kind: "rank"; board: string; userId: string; refs: number };

export const topKey = (board: string): string => `top:${board}`;
export const rankKey = (board: string, userId: string): string => `rank:${board}:${userId}`;
export const seasonKey = (board: string): string => `season:${board}`;
export const STATUS_KEY = "status";
export const HEALTH_KEY = "health";
export const ANNOUNCE_KEY = "announce";
const errorKey = (subKey: string): string => `error:${subKey}`;

export class LiveStore {
  readonly toasts: ToastQueue;
  /** Snapshots dropped because their seq was not newer (for tests and the debug overlay). */
  droppedSnapshots = 0;
  /** Total sockets opened (for tests). */
  connects = 0;

  private status: ConnStatus = { state: "idle", attempt: 0, reason: null, lastCloseCode: null, retryAt: null };
  private socket: SocketLike | null = null;
  private started = false;
  private networkOnline = true;
  private token: string | null = null;
  private attempt = 0;
  private reconnectTimer: TimerHandle | null = null;
  private heartbeatTimer: TimerHandle | null = null;
  private lastMessageAt = 0;
  private nextRef = 1;
  private readonly refToSub = new Map<number, string>();
  private readonly subs = new Map<string, Sub>();
  private readonly tops = new Map<string, TopState>();
  private readonly lastTopSeq = new Map<string, number>();
  private readonly ranks = new Map<string, RankState>();
  private readonly seasons = new Map<string, SeasonEnd>();
  /** Season announcements take negative ids, apart from the toasts' (which are positive). */
  private seasonAnnouncements = 0;
  private readonly labels = new Map<string, string>();
  private readonly errors = new Map<string, ErrorPush>();
  private readonly listeners = new Map<string, Set<() => void>>();
  private announcement: Announcement | null = null;
  private health: Health = UNKNOWN_HEALTH;
  /** A status frame arrived on the current socket (then /readyz is not polled). */
  private statusFrameSeen = false;
  private readyTimer: TimerHandle | null = null;
  private probing = false;
  private lastProbeAt = Number.NEGATIVE_INFINITY;
  private readonly backoff: BackoffOptions;
  private readonly heartbeatMs: number;
  private readonly readyPollMs: number;

  constructor(private readonly deps: StoreDeps) {
    this.backoff = deps.backoff ?? DEFAULT_BACKOFF;
    this.heartbeatMs = deps.heartbeatMs ?? 20_000;
    this.readyPollMs = deps.readyPollMs ?? 10_000;
    this.toasts = new ToastQueue(deps.timers, deps.toasts ?? DEFAULT_TOAST_OPTIONS);
    this.toasts.subscribe(() => {
      const latest = this.toasts.visible.at(-1);
      if (latest && latest.id !== this.announcement?.id) this.announce(latest.id, latest.spoken);
    });
  }

  // ---- lifecycle ------------------------------------------------------------------------------------

  start(): void {
    if (this.started) return;
    this.started = true;
    this.attempt = 0;
    this.probeReadyNow(); // at once on load: the socket may take a while, or never open
    if (this.networkOnline) this.connect();
    else this.setStatus({ state: "offline", attempt: 0, reason: "network", retryAt: null });
  }

  stop(): void {
    this.started = false;
    this.cancelReconnect();
    this.cancelReadyPoll();
    this.dropSocket(1000, "client stopped");
    this.toasts.clear();
    this.setStatus({ state: "idle", attempt: 0, reason: null, retryAt: null });
  }

  /** Reconnect now (after an auth failure, or when the user does not want to wait for the backoff). */
  retry(): void {
    if (!this.started) return;
    this.cancelReconnect();
    this.dropSocket(1000, "retry");
    this.attempt = 0;
    if (this.networkOnline) this.connect();
  }

  /** The browser's online/offline events. */
  setNetworkOnline(online: boolean): void {
    if (online === this.networkOnline) return;
    this.networkOnline = online;
    if (!this.started) return;
    if (!online) {
      this.cancelReconnect();
      this.dropSocket(1000, "network offline");
      this.setStatus({ state: "offline", attempt: 0, reason: "network", retryAt: null });
    } else if (this.status.reason !== "auth") {
      this.attempt = 0;
      this.connect();
    }
  }

  /** A credential sent in an `auth` frame after every open (needed when public reads are off). */
  setToken(token: string | null): void {
    const next = token && token.trim() ? token.trim() : null;
    if (next === this.token) return;
    this.token = next;
    if (this.started && (this.socket || this.status.reason === "auth")) this.retry();
  }

  // ---- subscriptions --------------------------------------------------------------------------------

  /** Follow a board's top-N. Returns the release function (reference counted). */
  watchTop(board: string, limit = 10): () => void {
    return this.watch(topKey(board), () => ({ kind: "top", board, limit, refs: 0 }));
  }

  /** Follow one player's rank on a board. `label` is how toasts name them. */
  watchRank(board: string, userId: string, label?: string): () => void {
    const key = rankKey(board, userId);
    if (label || !this.labels.has(key)) this.labels.set(key, label ?? userId);
    return this.watch(key, () => ({ kind: "rank", board, userId, refs: 0 }));
  }

  /** How toasts and announcements name a followed player (e.g. the display name once known). */
  setRankLabel(board: string, userId: string, label: string): void {
    this.labels.set(rankKey(board, userId), label);
  }

  private watch(key: string, make: () => Sub): () => void {
    let sub = this.subs.get(key);
    if (!sub) {
      sub = make();
      this.subs.set(key, sub);
      this.errors.delete(key);
      if (this.isOpen()) this.sendSubscribe(key, sub, "subscribe");
    }
    sub.refs += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const current = this.subs.get(key);
      if (!current) return;
      current.refs -= 1;
      if (current.refs > 0) return;
      this.subs.delete(key);
      if (current.kind === "rank") {
        // A later follow of the same player starts fresh (no toast against a stale rank).
        this.ranks.delete(key);
        this.toasts.forget(key);
        this.emit(key);
      }
      if (this.isOpen()) this.sendSubscribe(key, current, "unsubscribe");
    };
  }

  // ---- reads (stable references until the topic changes) --------------------------------------------

  listen(key: string, listener: () => void): () => void {
    let set = this.listeners.get(key);
    if (!set) {
      set = new Set();
      this.listeners.set(key, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
    };
  }

  getStatus(): ConnStatus {
    return this.status;
  }

  /** What the server last said about its dependencies (status frame, else /readyz). */
  getHealth(): Health {
    return this.health;
  }

  getTop(board: string): TopState | undefined {
    return this.tops.get(topKey(board));
  }

  getRank(board: string, userId: string): RankState | undefined {
    return this.ranks.get(rankKey(board, userId));
  }

  /** The last reset of this board seen on the socket (a `season` frame), if any. */
  getSeasonEnd(board: string): SeasonEnd | undefined {
    return this.seasons.get(seasonKey(board));
  }

  /** The last `error` frame that answered a subscribe for this topic key (e.g. unknown board). */
  getError(key: string): ErrorPush | undefined {
    return this.errors.get(key);
  }

  getAnnouncement(): Announcement | null {
    return this.announcement;
  }

  /** Announce a message through the polite live region. */
  announce(id: number, text: string): void {
    this.announcement = { id, text };
    this.emit(ANNOUNCE_KEY);
  }

  // ---- socket ---------------------------------------------------------------------------------------

  private isOpen(): boolean {
    return this.socket !== null && this.socket.readyState === WS_OPEN && this.status.state === "connected";
  }

  private connect(): void {
    this.cancelReconnect();
    this.dropSocket(1000, "reconnect");
    const first = this.connects === 0;
    this.setStatus({
      state: first ? "connecting" : "reconnecting",
      attempt: first ? 0 : Math.max(this.attempt, 1),
      reason: null,
      retryAt: null,
    });
    let socket: SocketLike;
    try {
      socket = this.deps.createSocket(this.deps.url);
    } catch {
      this.scheduleReconnect(null);
      return;
    }
    this.connects += 1;
    this.socket = socket;
    socket.onopen = () => {
      if (this.socket !== socket) return;
      this.onOpen();
    };
    socket.onmessage = (ev) => {
      if (this.socket !== socket) return;
      this.onMessage(ev.data);
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.onClose(ev.code);
    };
    socket.onerror = () => {
      // Always followed by close; nothing to do here.
    };
  }

  private onOpen(): void {
    this.attempt = 0;
    this.statusFrameSeen = false;
    this.lastMessageAt = this.deps.timers.now();
    this.setStatus({ state: "connected", attempt: 0, reason: null, retryAt: null });
    if (this.token) this.send({ type: "auth", token: this.token });
    this.send({ type: "subscribe", topics: ["status"] }); // answered with a status frame, and again on change
    for (const [key, sub] of this.subs) this.sendSubscribe(key, sub, "subscribe");
    this.scheduleHeartbeat();
    this.scheduleReadyPoll();
  }

  private onClose(code: number): void {
    this.stopHeartbeat();
    this.cancelReadyPoll();
    this.status = { ...this.status, lastCloseCode: code };
    if (!this.started) return;
    if (code === 1008) {
      // Authentication failed: retrying with the same credential would only hammer the server.
      this.setStatus({ state: "offline", attempt: 0, reason: "auth", retryAt: null });
      return;
    }
    if (!this.networkOnline) {
      this.setStatus({ state: "offline", attempt: 0, reason: "network", retryAt: null });
      return;
    }
    this.scheduleReconnect(code);
  }

  private scheduleReconnect(code: number | null): void {
    const delay = backoffDelay(this.attempt, this.deps.random, this.backoff);
    this.attempt += 1;
    const retryAt = this.deps.timers.now() + delay;
    this.setStatus({ state: "reconnecting", attempt: this.attempt, reason: null, retryAt, lastCloseCode: code });
    this.reconnectTimer = this.deps.timers.setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private cancelReconnect(): void {
    if (this.reconnectTimer !== null) this.deps.timers.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** Detach and close the current socket without running the close handling for it. */
  private dropSocket(code: number, reason: string): void {
    const s = this.socket;
    if (!s) return;
    this.socket = null;
    this.stopHeartbeat();
    this.cancelReadyPoll();
    s.onopen = s.onmessage = s.onerror = null;
    s.onclose = null;
    try {
      s.close(code, reason);
    } catch {
      // Closing a socket that is still connecting may throw in some browsers; it is gone either way.
    }
  }

  private scheduleHeartbeat(): void {
    this.stopHeartbeat();
    this.heartbeatTimer = this.deps.timers.setTimeout(() => {
      this.heartbeatTimer = null;
      if (!this.isOpen()) return;
      const silentFor = this.deps.timers.now() - this.lastMessageAt;
      if (silentFor > this.heartbeatMs * 2.5) {
        // A half-open TCP connection never fires close; treat long silence as a drop.
        this.dropSocket(4000, "heartbeat timeout");
        this.onClose(4000);
        return;
      }
      this.send({ type: "ping", ref: "hb" });
      this.scheduleHeartbeat();
    }, this.heartbeatMs);
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== null) this.deps.timers.clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  // ---- server health: /readyz fallback -------------------------------------------------------------

  /**
   * Probe every readyPollMs while connected, until a status frame arrives. The first wait after a
   * (re)connect counts from the last probe, so the probe made on load is not repeated at once.
   */
  private scheduleReadyPoll(wait = Math.max(0, this.lastProbeAt + this.readyPollMs - this.deps.timers.now())): void {
    this.cancelReadyPoll();
    if (!this.deps.probeReady || this.statusFrameSeen) return;
    this.readyTimer = this.deps.timers.setTimeout(() => {
      this.readyTimer = null;
      if (!this.isOpen() || this.statusFrameSeen) return;
      this.probeReadyNow(); // skipped while the previous probe has not answered
      this.scheduleReadyPoll(this.readyPollMs);
    }, wait);
  }

  private cancelReadyPoll(): void {
    if (this.readyTimer !== null) this.deps.timers.clearTimeout(this.readyTimer);
    this.readyTimer = null;
  }

  private probeReadyNow(): void {
    const probe = this.deps.probeReady;
    if (!probe || this.probing) return;
    this.probing = true;
    this.lastProbeAt = this.deps.timers.now();
    const done = (health: Health | null) => {
      this.probing = false;
      // A status frame on the current socket is the better source: a late probe answer does not undo it.
      if (health && this.started && !this.statusFrameSeen) this.setHealth(health);
    };
    probe().then(done, () => done(null));
  }

  private setHealth(next: Health): void {
    const h = this.health;
    if (h.state === next.state && h.detail === next.detail && h.source === next.source) return;
    this.health = next;
    this.emit(HEALTH_KEY);
  }

  private send(frame: Record<string, unknown>): void {
    if (this.socket && this.socket.readyState === WS_OPEN) this.socket.send(JSON.stringify(frame));
  }

  private sendSubscribe(key: string, sub: Sub, type: "subscribe" | "unsubscribe"): void {
    const ref = this.nextRef++;
    this.refToSub.set(ref, key);
    if (this.refToSub.size > 256) {
      const oldest = this.refToSub.keys().next().value;
      if (oldest !== undefined) this.refToSub.delete(oldest);
    }
    if (sub.kind === "top") {
      const frame: Record<string, unknown> = { type, ref, board: sub.board, topics: ["top"] };
      if (type === "subscribe") frame.limit = sub.limit;
      this.send(frame);
    } else {
      this.send({ type, ref, board: sub.board, topics: ["rank"], user_id: sub.userId });
    }
  }

  // ---- frames ---------------------------------------------------------------------------------------

  private onMessage(data: unknown): void {
    this.lastMessageAt = this.deps.timers.now();
    if (typeof data !== "string") return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(data) as ServerFrame;
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "top":
        this.applyTop(frame);
        break;
      case "rank":
        this.applyRank(frame);
        break;
      case "season":
        this.applySeason(frame);
        break;
      case "error":
        this.applyError(frame);
        break;
      case "status": {
        const health = healthFromFrame(frame);
        if (health) {
          this.statusFrameSeen = true;
          this.cancelReadyPoll();
          this.setHealth(health);
        }
        break;
      }
      default:
        break;
    }
  }

  /** Apply a `top` snapshot unless it is not newer than the last one applied for that board. */
  applyTop(msg: TopPush): boolean {
    const last = this.lastTopSeq.get(msg.board);
    if (last !== undefined && msg.seq <= last) {
      this.droppedSnapshots += 1;
      return false;
    }
    this.lastTopSeq.set(msg.board, msg.seq);
    const key = topKey(msg.board);
    this.tops.set(key, {
      board: msg.board,
      seq: msg.seq,
      total: msg.total,
      entries: msg.entries,
      receivedAt: this.deps.timers.now(),
    });
    if (this.errors.delete(key)) this.emit(errorKey(key));
    this.emit(key);
    return true;
  }

  /** Apply a `rank` push for a followed player; raise a toast when the rank moved. */
  applyRank(msg: RankPush): boolean {
    const key = rankKey(msg.board, msg.user_id);
    if (!this.subs.has(key)) return false; // a late push after unfollow
    const prev = this.ranks.get(key);
    const seq = typeof msg.seq === "number" ? msg.seq : null;
    if (prev && prev.seq !== null && seq !== null && seq < prev.seq) {
      this.droppedSnapshots += 1;
      return false;
    }
    this.ranks.set(key, {
      board: msg.board,
      userId: msg.user_id,
      rank: msg.rank,
      previousRank: msg.previous_rank,
      score: msg.score,
      seq,
      receivedAt: this.deps.timers.now(),
    });
    // Prefer our own last known rank: after a reconnect the server's first push has previous_rank null
    // even if the player moved while we were away.
    const from = prev ? prev.rank : msg.previous_rank;
    if (from !== null && from !== undefined && msg.rank !== null && from !== msg.rank) {
      this.toasts.push(from, msg.rank, this.labels.get(key) ?? msg.user_id, key);
    }
    this.emit(key);
    return true;
  }

  /** Apply a `season` frame (a reset) unless it is not newer than the last one seen for that board. */
  applySeason(msg: SeasonPush): boolean {
    if (typeof msg.board !== "string" || !Number.isSafeInteger(msg.ended) || !Number.isSafeInteger(msg.season)) {
      return false;
    }
    const key = seasonKey(msg.board);
    const prev = this.seasons.get(key);
    if (prev && msg.season <= prev.season) return false; // the same reset again, or older news
    const end: SeasonEnd = {
      board: msg.board,
      ended: msg.ended,
      season: msg.season,
      winners: Array.isArray(msg.final) ? msg.final.slice(0, 3) : null,
      receivedAt: this.deps.timers.now(),
      dismissed: false,
    };
    this.seasons.set(key, end);
    this.emit(key);
    this.seasonAnnouncements += 1;
    this.announce(-this.seasonAnnouncements, seasonEndedText(end));
    return true;
  }

  /** Close the banner about the board's last reset (what it says about the live season stays known). */
  dismissSeasonEnd(board: string): void {
    const key = seasonKey(board);
    const end = this.seasons.get(key);
    if (!end || end.dismissed) return;
    this.seasons.set(key, { ...end, dismissed: true });
    this.emit(key);
  }

  private applyError(msg: ErrorPush): void {
    if (typeof msg.ref !== "number") return;
    const key = this.refToSub.get(msg.ref);
    if (!key) return;
    this.errors.set(key, msg);
    this.emit(errorKey(key));
  }

  listenError(key: string, listener: () => void): () => void {
    return this.listen(errorKey(key), listener);
  }

  // ---- plumbing -------------------------------------------------------------------------------------

  private setStatus(patch: Partial<ConnStatus>): void {
    this.status = { ...this.status, ...patch };
    this.emit(STATUS_KEY);
  }

  private emit(key: string): void {
    const set = this.listeners.get(key);
    if (!set) return;
    for (const l of [...set]) l();
  }
}

/** The production store: a real WebSocket to /ws on the page's origin. */
export function createBrowserStore(): LiveStore {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  return new LiveStore({
    url: `${proto}//${window.location.host}/ws`,
    createSocket: (url) => new WebSocket(url) as unknown as SocketLike,
    timers: {
      now: () => Date.now(),
      setTimeout: (fn, ms) => window.setTimeout(fn, ms),
      clearTimeout: (h) => window.clearTimeout(h as number),
    },
    random: Math.random,
    probeReady,
  });
}
