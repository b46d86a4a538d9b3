import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { AdminApp, isAdminLocation } from "./admin/AdminApp";
import { StoreContext } from "./hooks";
import { createBrowserStore } from "./store";
import "./styles.css";

const store = createBrowserStore();
store.setNetworkOnline(navigator.onLine !== false);
window.addEventListener("online", () => store.setNetworkOnline(true));
window.addEventListener("offline", () => store.setNetworkOnline(false));
store.start();

// Exposed for debugging in the console and for the end-to-end tests (read-only use).
(window as unknown as { __leaderboard: typeof store }).__leaderboard = store;

const root = document.getElementById("root");
if (!root) throw new Error("#root missing");
createRoot(root).render(
  <StrictMode>
    <StoreContext.Provider value={store}>
      {isAdminLocation(window.location) ? <AdminApp /> : <App />}
    </StoreContext.Provider>
  </StrictMode>,
);
