// Starts the REAL leaderboard server (embedded Postgres + Valkey under a temp data dir) and a real Chromium.
// Every wait has a timeout; servers and temp dirs are cleaned up even when a test fails.

import { execFile, spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const CLIENT_DIR = resolve(here, "..");
export const REPO = resolve(CLIENT_DIR, "..");
export const LEADERBOARD_BIN = process.env.LEADERBOARD_BIN ?? join(REPO, ".venv", "bin", "leaderboard");
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const DIST = join(CLIENT_DIR, "dist");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Poll `check` until it returns a truthy value or `timeoutMs` passes (then throw with `what`). */
export async function waitFor(what, check, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr})` : ""}`);
    }
    await sleep(intervalMs);
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class LeaderboardServer {
  constructor(dataDir, port) {
    this.dataDir = dataDir;
    this.port = port;
    this.proc = null;
    this.starts = 0;
    this.url = `http://127.0.0.1:${port}`;
  }

  static async create() {
    const dataDir = mkdtempSync(join(tmpdir(), "lb-ui-e2e-"));
    return new LeaderboardServer(dataDir, await freePort());
  }

  logPath(n = this.starts) {
    return join(this.dataDir, `server-${n}.log`);
  }

  logTail(lines = 40) {
    try {
      return readFileSync(this.logPath(), "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  async start({ readyTimeoutMs = 90_000 } = {}) {
    if (!existsSync(join(DIST, "index.html"))) throw new Error(`${DIST} is not built: run npm run build first`);
    this.starts += 1;
    const log = createWriteStream(this.logPath());
    const proc = spawn(
      LEADERBOARD_BIN,
      ["serve", "--host", "127.0.0.1", "--port", String(this.port), "--data-dir", this.dataDir],
      {
        env: { ...process.env, LEADERBOARD_STATIC_DIR: DIST },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true, // its own process group, so cleanup can reach anything it leaves behind
      },
    );
    proc.stdout.pipe(log);
    proc.stderr.pipe(log);
    this.proc = proc;
    let exited = null;
    proc.once("exit", (code, signal) => {
      exited = { code, signal };
    });
    try {
      await waitFor(
        `GET ${this.url}/readyz == 200`,
        async () => {
          if (exited) throw new Error(`server exited early (${JSON.stringify(exited)}):\n${this.logTail()}`);
          const res = await fetch(`${this.url}/readyz`, { signal: AbortSignal.timeout(2000) });
          return res.status === 200;
        },
        { timeoutMs: readyTimeoutMs, intervalMs: 200 },
      );
    } catch (err) {
      if (exited) throw new Error(`server exited early (${JSON.stringify(exited)}):\n${this.logTail()}`);
      throw new Error(`${err.message}\n${this.logTail()}`);
    }
  }

  /** SIGTERM the server process (a graceful drain: sockets get 1012) and wait for it to exit. */
  async stop({ timeoutMs = 45_000 } = {}) {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const done = new Promise((r) => proc.once("exit", r));
    proc.kill("SIGTERM");
    const ok = await Promise.race([done.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!ok) {
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {
        // already gone
      }
      await Promise.race([done, sleep(5000)]);
    }
    this.proc = null;
  }

  /** Stop everything this server started (also embedded servers a crash left behind) and delete the data. */
  async destroy() {
    await this.stop().catch(() => {});
    const pidFiles = [join(this.dataDir, "pg", "postmaster.pid"), join(this.dataDir, "valkey", "server.json")];
    for (const f of pidFiles) {
      try {
        const text = readFileSync(f, "utf8");
        const pid = f.endsWith(".json") ? JSON.parse(text).pid : Number.parseInt(text.split("\n")[0], 10);
        if (pid > 0 && alive(pid)) {
          process.kill(pid, "SIGTERM");
          await waitFor(`pid ${pid} to exit`, () => !alive(pid), { timeoutMs: 10_000 }).catch(() => {
            process.kill(pid, "SIGKILL");
          });
        }
      } catch {
        // no such file: nothing left running
      }
    }
    if (!process.env.E2E_KEEP_DATA) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /**
   * Stop or start this server's embedded Postgres (an outage the server must survive), through the
   * project's own EmbeddedPostgres: start() attaches to a running one or starts it; stop(outage=True) is
   * pg_ctl -m fast even though the running server, not this helper, owns it.
   */
  postgres(action) {
    const python = join(REPO, ".venv", "bin", "python");
    const code = [
      "import sys",
      "from pathlib import Path",
      "from leaderboard.embedded import EmbeddedPostgres",
      "pg = EmbeddedPostgres(Path(sys.argv[1]))",
      "pg.start()",
      "if sys.argv[2] == 'stop': pg.stop(outage=True)  # the server attached to it: stop it all the same",
    ].join("\n");
    return new Promise((resolveDone, reject) => {
      execFile(python, ["-c", code, this.dataDir, action], { timeout: 60_000, env: process.env }, (err, _stdout, stderr) => {
        if (err) reject(new Error(`postgres ${action} failed: ${err.message}\n${stderr}`));
        else resolveDone();
      });
    });
  }

  createKey(role = "submit", name = "e2e") {
    return new Promise((resolveKey, reject) => {
      execFile(
        LEADERBOARD_BIN,
        ["keys", "create", "--role", role, "--name", name, "--data-dir", this.dataDir],
        { timeout: 60_000, env: process.env },
        (err, stdout, stderr) => {
          if (err) return reject(new Error(`keys create failed: ${err.message}\n${stderr}`));
          const key = stdout.trim().split("\n").at(-1)?.trim();
          if (!key) return reject(new Error(`keys create printed no key:\n${stdout}\n${stderr}`));
          resolveKey(key);
        },
      );
    });
  }

  async submit(key, body) {
    const res = await fetch(`${this.url}/api/leaderboard/submit`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
      body: JSON.stringify({ session_id: crypto.randomUUID(), ...body }),
      signal: AbortSignal.timeout(10_000),
    });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`submit ${JSON.stringify(body)} -> ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /**
   * Create a board (admin key). A `format` the server does not know yet (it refuses unknown fields with 422)
   * is retried without it; `format` in the result is what the server's board list reports (null: none).
   */
  async createBoard(adminKey, spec) {
    const post = (body) =>
      fetch(`${this.url}/api/leaderboards`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${adminKey}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
    let res = await post(spec);
    if (res.status === 422 && spec.format !== undefined) {
      const problem = await res.json();
      if (!JSON.stringify(problem).includes("format")) throw new Error(`create board -> 422 ${JSON.stringify(problem)}`);
      const { format: _unknown, ...rest } = spec;
      res = await post(rest);
    }
    if (res.status !== 201) throw new Error(`create board ${spec.id} -> ${res.status} ${await res.text()}`);
    const board = (await this.boards()).find((b) => b.id === spec.id);
    return { ...board, format: board?.format ?? null };
  }

  async boards() {
    const res = await fetch(`${this.url}/api/leaderboards`, { signal: AbortSignal.timeout(10_000) });
    if (res.status !== 200) throw new Error(`boards -> ${res.status}`);
    return (await res.json()).boards;
  }

  /** GET a JSON API path (e.g. `/api/leaderboards/cup`); throws unless 200. */
  async get(path) {
    const res = await fetch(`${this.url}${path}`, { signal: AbortSignal.timeout(10_000) });
    if (res.status !== 200) throw new Error(`GET ${path} -> ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** End a board's live season now (POST /api/leaderboards/{id}/reset, admin key). */
  async reset(adminKey, board) {
    const res = await fetch(`${this.url}/api/leaderboards/${board}/reset`, {
      method: "POST",
      headers: { Authorization: `Bearer ${adminKey}` },
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 200) throw new Error(`reset ${board} -> ${res.status} ${await res.text()}`);
    return res.json();
  }

  async top(board = "global", limit = 10) {
    const res = await fetch(`${this.url}/api/leaderboard/top?board=${board}&limit=${limit}`, {
      signal: AbortSignal.timeout(10_000),
    });
    if (res.status !== 200) throw new Error(`top -> ${res.status}`);
    return res.json();
  }
}

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: apt-get install -y chromium`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: 60_000,
  });
}

/** user_ids of the live board's rows, top to bottom. */
export function boardRows(page) {
  return page.$$eval("table.board tbody tr[data-user]", (rows) =>
    rows.map((r) => ({
      user: r.getAttribute("data-user"),
      rank: Number(r.querySelector(".rank-badge")?.textContent),
      name: r.querySelector(".name")?.textContent,
      score: r.querySelector(".col-score")?.textContent,
    })),
  );
}

export async function statusOf(page) {
  return page.$eval(".status", (el) => ({ state: el.getAttribute("data-state"), text: el.textContent }));
}
