import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// The dev server proxies every server route to a locally running `leaderboard serve` (default :8000);
// override with LEADERBOARD_URL=http://127.0.0.1:PORT npm run dev.
const target = process.env.LEADERBOARD_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: {
    host: "127.0.0.1",
    proxy: {
      "/api": { target, changeOrigin: true },
      "/ws": { target, ws: true, changeOrigin: true },
      "/healthz": { target, changeOrigin: true },
      "/readyz": { target, changeOrigin: true },
      "/metrics": { target, changeOrigin: true },
    },
  },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
  test: { include: ["src/**/*.test.ts"], environment: "node" },
});
