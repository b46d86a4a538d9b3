// End-to-end: the real server (embedded Postgres + Valkey), the built client (client/dist), real Chromium.
// Run with `npm run e2e` (builds first). Tests run in order and share one server and one page.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { spawn } from "node:child_process";
import { LeaderboardServer, REPO, boardRows, launchBrowser, sleep, statusOf, waitFor } from "./harness.mjs";

const IMG_DIR = join(REPO, "docs", "img");

/** 24 players with display names for the screenshots. */
const ROSTER = [
  ["nova", "Nova Strike"], ["kite", "Kite Runner"], ["bjorn", "Björn Ironside"], ["mei", "Mei Lin"],
  ["zed", "Zed the Swift"], ["ash", "Ash Ketch"], ["luna", "Luna Vale"], ["orion", "Orion Pax"],
  ["pixel", "PixelPunk"], ["rook", "Rook & Bishop"], ["sol", "Sol Invictus"], ["tara", "Tara Quinn"],
  ["umbra", "Umbra"], ["vex", "Vex Hollow"], ["wren", "Wren Ashby"], ["yuki", "Yuki Tanaka"],
  ["amara", "Amara Osei"], ["diego", "Diego Ramírez"], ["freya", "Freya North"], ["gus", "Gus Grizzly"],
  ["hana", "Hana Park"], ["ivo", "Ivo Petrov"], ["jules", "Jules Verne Jr."], ["kai", "Kai Nakoa"],
];

/**
 * Where the scores and names are on screen: each score cell's box against the viewport and whether its text
 * is cut; each name's line count, whether it is cut (ellipsis) and its title.
 */
function layoutOf(page) {
  return page.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    const box = (el) => {
      const r = el.getBoundingClientRect();
      return { left: Math.round(r.left), right: Math.round(r.right) };
    };
    const scores = [
      ...document.querySelectorAll("table.board tbody tr[data-user] .col-score, table.around tbody .col-score, [data-testid=player-score]"),
    ].map((el) => ({ where: el.closest("table")?.className || "card", text: el.textContent, cut: el.scrollWidth > el.clientWidth, ...box(el) }));
    const shown = (el) => el.getClientRects().length > 0; // TV mode hides the user_id line
    const names = [...document.querySelectorAll("table.board tbody .name, table.board tbody .uid, table.around tbody .name")].filter(shown).map((el) => {
      const cs = getComputedStyle(el);
      const line = Number.parseFloat(cs.lineHeight) || Number.parseFloat(cs.fontSize) * 1.4;
      return {
        text: el.textContent, title: el.getAttribute("title"), lines: Math.round(el.getBoundingClientRect().height / line),
        ellipsis: cs.textOverflow === "ellipsis" && el.scrollWidth > el.clientWidth,
      };
    });
    return { vw, overflow: document.documentElement.scrollWidth - window.innerWidth, scores, names };
  });
}

/** `cut`: texts that must be shown cut with an ellipsis, the whole text in the title. */
function assertLayout(layout, { cut, topScore, where }) {
  assert.ok(layout.overflow <= 0, `${where}: horizontal overflow ${layout.overflow}px`);
  const top = layout.scores.filter((s) => s.text === topScore);
  assert.ok(top.length >= 1, `${where}: ${topScore} shown in full (${JSON.stringify(layout.scores.map((s) => s.text))})`);
  for (const s of layout.scores) {
    assert.ok(s.left >= 0 && s.right <= layout.vw, `${where}: score ${s.text} (${s.where}) at ${s.left}..${s.right}, viewport ${layout.vw}`);
    assert.ok(!s.cut, `${where}: score ${s.text} (${s.where}) is cut`);
  }
  for (const n of layout.names) assert.equal(n.lines, 1, `${where}: "${n.text}" takes ${n.lines} lines`);
  for (const full of cut) {
    const shown = layout.names.filter((n) => n.text === full);
    assert.ok(shown.length >= 1, `${where}: ${full} shown`);
    for (const n of shown) {
      assert.equal(n.title, full, `${where}: the full text is in the title`);
      assert.ok(n.ellipsis, `${where}: "${full}" is cut with an ellipsis`);
    }
  }
}

const scoresOf = (page, selector) => page.$$eval(selector, (els) => els.map((e) => e.textContent));

/** "resets in 2 d 3 h" / "3 h 12 min" / "12 min 5 s" / "45 s" as [seconds, the unit shown]; null for any other text. */
function countdownSeconds(text) {
  const m = /^resets in (?:(\d+) d (\d+) h|(\d+) h (\d+) min|(\d+) min (\d+) s|(\d+) s)$/.exec((text ?? "").trim());
  if (!m) return null;
  if (m[1] !== undefined) return [Number(m[1]) * 86_400 + Number(m[2]) * 3600, 3600];
  if (m[3] !== undefined) return [Number(m[3]) * 3600 + Number(m[4]) * 60, 60];
  if (m[5] !== undefined) return [Number(m[5]) * 60 + Number(m[6]), 1];
  return [Number(m[7]), 1];
}

/** The page's countdown agrees with the board's next_reset_at as the API gives it (within the unit shown). */
async function assertCountdown(server, page, board, where) {
  const info = await server.get(`/api/leaderboards/${board}`);
  assert.ok(info.next_reset_at, `${where}: ${board} has a next reset`);
  const text = await page.textContent("[data-testid=countdown]");
  const left = (Date.parse(info.next_reset_at) - Date.now()) / 1000;
  const shown = countdownSeconds(text);
  assert.ok(shown, `${where}: the countdown reads "${text}"`);
  const [secs, unit] = shown;
  assert.ok(secs <= left + 2 && secs >= left - unit - 2, `${where}: "${text}" with ${left.toFixed(1)} s left`);
  assert.equal(await page.getAttribute("[data-testid=countdown]", "datetime"), info.next_reset_at);
  return info;
}

const seasonOf = async (page) => Number(/\d+/.exec(await page.textContent("[data-testid=season]"))?.[0]);

describe("leaderboard UI against the real server", { timeout: 600_000 }, () => {
  /** @type {LeaderboardServer} */
  let server;
  let key;
  let adminKey;
  /** One admin key, created on first use. */
  const admin = async () => (adminKey ??= await server.createKey("admin", "e2e-admin"));
  let browser;
  let page;
  const pageErrors = [];
  const httpRequests = [];
  const wsOpened = [];

  before(async () => {
    server = await LeaderboardServer.create();
    await server.start();
    key = await server.createKey("submit", "e2e");
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1, colorScheme: "dark" });
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (err) => pageErrors.push(String(err)));
    page.on("console", (msg) => {
      if (msg.type() === "error" && !/WebSocket connection .* failed|Failed to load resource/.test(msg.text())) pageErrors.push(msg.text());
    });
    page.on("request", (req) => httpRequests.push({ url: req.url(), at: Date.now() }));
    page.on("websocket", (ws) => wsOpened.push({ url: ws.url(), at: Date.now() }));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.destroy();
  });

  test("the board loads, connects, and re-orders within 1 s of a submission, without reload or polling", async (t) => {
    await server.submit(key, { user_id: "alice", score: 100, display_name: "Alice" });
    await server.submit(key, { user_id: "bob", score: 50, display_name: "Bob" });
    await page.goto(`${server.url}/`);
    await waitFor("status connected", async () => (await statusOf(page)).state === "connected", { timeoutMs: 15_000 });
    await waitFor("alice above bob", async () => (await boardRows(page)).map((r) => r.user).join() === "alice,bob");
    const rows = await boardRows(page);
    assert.deepEqual(
      rows.map((r) => [r.rank, r.name]),
      [
        [1, "Alice"],
        [2, "Bob"],
      ],
    );
    // Accessible table structure.
    assert.equal(await page.locator("table.board caption").count(), 1);
    assert.equal(await page.locator("table.board thead th[scope=col]").count(), 3);
    assert.equal(await page.locator("table.board tbody th[scope=row]").count(), 2);

    await page.evaluate(() => {
      window.__noReloadMarker = 42;
    });
    const requestsBefore = httpRequests.length;
    const ack = await server.submit(key, { user_id: "bob", score: 100 }); // incr: bob 150 > alice 100
    assert.equal(ack.score, 150);
    assert.equal(ack.rank, 1);
    const t0 = Date.now();
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll("table.board tbody tr[data-user]")].map((r) => r.dataset.user).join() ===
        "bob,alice",
      null,
      { timeout: 1000, polling: 20 },
    );
    const took = Date.now() - t0;
    assert.ok(took <= 1000, `re-ordered after ${took} ms`);
    t.diagnostic(`board re-ordered ${took} ms after the submit was acknowledged`);
    assert.equal(await page.evaluate(() => window.__noReloadMarker), 42, "page was reloaded");
    const polled = httpRequests.slice(requestsBefore).filter((r) => r.url.includes("/api/"));
    assert.deepEqual(polled, [], "the live board must not poll the REST API");
    assert.equal(wsOpened.length, 1, "one WebSocket");
    const bobRow = (await boardRows(page))[0];
    assert.equal(bobRow.score, "150");
    assert.equal(bobRow.name, "Bob");
  });

  test("find a player, follow them live, and get an 'overtaken' toast", async () => {
    await page.fill("form[role=search] input", "alice");
    await page.click("form[role=search] button[type=submit]");
    await waitFor("alice's rank", async () => (await page.textContent("[data-testid=player-rank]")) === "2");
    assert.equal(await page.textContent("[data-testid=player-score]"), "100");
    // The rank can arrive first by the live push; the percentile comes with the lookup's answer.
    await waitFor("alice's percentile", async () =>
      /100\.00 %|50\.00 %/.test(await page.textContent("[data-testid=player-result]")),
    );
    assert.equal(await page.locator("table.board tr.me[data-user=alice]").count(), 1);

    // 404: a clear "no entry" message.
    await page.fill("form[role=search] input", "nobody-here");
    await page.click("form[role=search] button[type=submit]");
    await waitFor("no-entry message", async () => (await page.locator("[data-testid=no-entry]").count()) === 1);
    assert.match(await page.textContent("[data-testid=no-entry]"), /No entry for nobody-here/);

    // A new search clears the previous answer, also when the new one is refused by validation.
    await page.fill("form[role=search] input", "not a user id!");
    await page.click("form[role=search] button[type=submit]");
    await page.locator("form[role=search] .error").waitFor({ state: "visible", timeout: 3000 });
    assert.match(await page.textContent("form[role=search] .error"), /1–64 characters/);
    assert.equal(await page.locator("[data-testid=no-entry]").count(), 0, "stale 'No entry' under the validation error");
    assert.equal((await page.textContent("[data-testid=player-result]")).trim(), "");

    await page.fill("form[role=search] input", "alice");
    await page.click("form[role=search] button[type=submit]");
    await waitFor("alice's rank again", async () => (await page.textContent("[data-testid=player-rank]")) === "2");
    await sleep(300); // the rank subscription is live (its first push has arrived)

    await server.submit(key, { user_id: "carol", score: 400, display_name: "Carol" });
    const toast = page.locator("[data-testid=toast]", { hasText: "overtaken: 2 → 3" });
    await toast.waitFor({ state: "visible", timeout: 3000 });
    await waitFor("live rank 3", async () => (await page.textContent("[data-testid=player-rank]")) === "3");
    await waitFor("live region", async () =>
      /overtaken: rank 2 to 3/.test(await page.textContent("[data-testid=live-region]")),
    );

    // Within 3 s of alice's last toast this one is held back until her window ends.
    await server.submit(key, { user_id: "alice", score: 1000 });
    await page.locator("[data-testid=toast]", { hasText: "↑ 3 → 1" }).waitFor({ state: "visible", timeout: 5000 });
    await waitFor("alice first", async () => (await boardRows(page))[0]?.user === "alice");

    // A busy board: 8 players pass alice over 2 s. At most one toast per player per 3 s, showing the net
    // change, and one on screen for her at a time (the old 400 ms throttle showed several).
    await page.evaluate(() => {
      const log = (window.__toastLog = { texts: [], maxVisible: 0 });
      const seen = new WeakSet();
      new MutationObserver(() => {
        const toasts = [...document.querySelectorAll("[data-testid=toast]")];
        log.maxVisible = Math.max(log.maxVisible, toasts.length);
        for (const t of toasts) {
          if (!seen.has(t)) log.texts.push(t.querySelector(".toast-text")?.textContent);
          seen.add(t);
        }
      }).observe(document.querySelector("section.toasts"), { childList: true, subtree: true });
    });
    for (let i = 0; i < 8; i++) {
      await server.submit(key, { user_id: `burst-${i}`, score: 1200 + i * 10 });
      await sleep(250);
    }
    await waitFor("alice's net move to 9", async () => /→ 9/.test(await page.textContent("section.toasts")), { timeoutMs: 6000 });
    await sleep(500);
    const log = await page.evaluate(() => window.__toastLog);
    assert.ok(log.texts.length >= 1 && log.texts.length <= 2, `toasts during the burst: ${JSON.stringify(log.texts)}`);
    assert.match(log.texts.at(-1), /^(↓ \d+ → 9 over 3 s|overtaken: \d+ → 9)$/);
    assert.equal(log.maxVisible, 1, `toasts on screen at once: ${log.maxVisible}`);
    await waitFor("alice's live rank 9", async () => (await page.textContent("[data-testid=player-rank]")) === "9");
  });

  test("server restart (SIGTERM): reconnecting, then connected, and the board is right", async () => {
    const socketsBefore = wsOpened.length;
    const seqBefore = Number(await page.getAttribute("table.board", "data-seq"));
    const stopping = server.stop();
    await waitFor("status reconnecting", async () => (await statusOf(page)).state === "reconnecting", {
      timeoutMs: 20_000,
      intervalMs: 50,
    });
    assert.match((await statusOf(page)).text, /Reconnecting \(attempt \d+\)/);
    await stopping;
    // While down the page keeps showing the last board and keeps retrying.
    await sleep(1000);
    assert.equal((await statusOf(page)).state, "reconnecting");
    await server.start();
    await waitFor("status connected again", async () => (await statusOf(page)).state === "connected", {
      timeoutMs: 30_000,
    });
    assert.ok(wsOpened.length > socketsBefore, "a new socket was opened");

    // A change after the restart still reaches the page (seq kept growing across the restart).
    await server.submit(key, { user_id: "dave", score: 5000, display_name: "Dave" });
    await waitFor("dave first", async () => (await boardRows(page))[0]?.user === "dave", { timeoutMs: 3000 });
    const seqAfter = Number(await page.getAttribute("table.board", "data-seq"));
    assert.ok(seqAfter > seqBefore, `seq ${seqAfter} > ${seqBefore}`);
    const truth = await server.top();
    const shown = await boardRows(page);
    assert.deepEqual(
      shown.map((r) => [r.rank, r.user, r.score]),
      truth.entries.map((e) => [e.rank, e.user_id, e.score.toLocaleString("en-US")]),
    );
    // And the followed player is followed again on the new socket.
    const rankOf = async (u) => (await (await fetch(`${server.url}/api/leaderboard/rank/${u}`)).json()).rank;
    const aliceBefore = await rankOf("alice");
    await server.submit(key, { user_id: "erin", score: 5500 });
    const aliceAfter = await rankOf("alice");
    assert.equal(aliceAfter, aliceBefore + 1);
    // (dave's pass may have raised a toast less than 3 s ago: then this one is held back to its window's end)
    await page
      .locator("[data-testid=toast]", { hasText: new RegExp(`(overtaken:|↓) \\d+ → ${aliceAfter}(?!\\d)`) })
      .waitFor({ state: "visible", timeout: 6000 });
  });

  test("submit panel: key in sessionStorage only, ack and problem details shown", async () => {
    await page.click("button.disclosure");
    await page.fill("input[type=password]", "lbk_wrong");
    const panel = page.locator("section.submit");
    await panel.locator("label:has-text('user_id') + input").fill("frank");
    await panel.locator("label:has-text('Score') + input").fill("77");
    await panel.locator("label:has-text('Display name') + input").fill("Frank");
    await panel.locator("button[type=submit]").click();
    await waitFor("401 problem", async () => /401/.test(await panel.locator("[data-testid=submit-result]").textContent()));
    assert.match(await panel.locator("[data-testid=submit-result]").textContent(), /unauthorized/);

    await page.fill("input[type=password]", key);
    await panel.locator("button[type=submit]").click();
    await waitFor("ack", async () => /Accepted:/.test(await panel.locator("[data-testid=submit-result]").textContent()));
    assert.match(await panel.locator("[data-testid=submit-result]").textContent(), /frank now has 77 on global/);
    const storage = await page.evaluate(() => ({
      session: sessionStorage.getItem("leaderboard.apiKey"),
      local: Object.keys(localStorage).length,
    }));
    assert.equal(storage.session, key);
    assert.equal(storage.local, 0);
    await page.click("button.disclosure");
  });

  test("1008: a bad key on the live socket shows the auth failure and does not hammer", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1000, height: 700 } });
    const p2 = await ctx.newPage();
    const sockets = [];
    p2.on("websocket", (ws) => sockets.push(ws.url()));
    try {
      await p2.goto(`${server.url}/`);
      await waitFor("connected", async () => (await statusOf(p2)).state === "connected", { timeoutMs: 15_000 });
      await p2.click("button.disclosure");
      await p2.fill("input[type=password]", "lbk_definitely_not_a_key");
      await p2.check("section.submit input[type=checkbox]");
      await waitFor("offline (auth)", async () => (await statusOf(p2)).state === "offline", { timeoutMs: 10_000 });
      assert.match((await statusOf(p2)).text, /authentication failed/);
      const n = sockets.length;
      await sleep(3000);
      assert.equal(sockets.length, n, "no reconnect loop after 1008");
      // Unticking the box drops the key and reconnects.
      await p2.uncheck("section.submit input[type=checkbox]");
      await waitFor("connected again", async () => (await statusOf(p2)).state === "connected", { timeoutMs: 10_000 });
    } finally {
      await ctx.close();
    }
  });

  test("phone width: no horizontal scrolling, board readable", async () => {
    const ctx = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    const p3 = await ctx.newPage();
    try {
      await p3.goto(`${server.url}/`);
      await waitFor("rows", async () => (await boardRows(p3)).length >= 5);
      const overflow = await p3.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `horizontal overflow ${overflow}px`);
    } finally {
      await ctx.close();
    }
  });

  test("time boards: m:ss.mmm on the board, the score card and the around table", async (t) => {
    const laps = await server.createBoard(await admin(), {
      id: "laps", title: "Laps", sort: "asc", operator: "best", format: "time_ms",
    });
    for (const [user_id, score] of [["ada", 83_456], ["bo", 3_723_004], ["cy", 59_999]]) {
      await server.submit(key, { user_id, score, board: "laps" });
    }
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    try {
      assert.equal(laps.format, "time_ms");
      const p = await ctx.newPage();
      await p.goto(`${server.url}/?board=laps&player=ada`);
      const times = ["0:59.999", "1:23.456", "1:02:03.004"];
      await waitFor("times on the board", async () => (await boardRows(p)).map((r) => r.score).join() === times.join());
      await waitFor("score card", async () => (await p.textContent("[data-testid=player-score]")) === "1:23.456");
      await waitFor("around table", async () => (await scoresOf(p, "table.around tbody .col-score")).join() === times.join());
      assert.equal(await p.textContent("table.board thead .col-score"), "Time");
      assert.match(await p.textContent("table.board caption"), /Laps \(lower is better\)/);
    } finally {
      await ctx.close();
    }
  });

  test("find a player: the around table follows the board when a neighbour scores, without polling", async (t) => {
    await server.createBoard(await admin(), { id: "hood", title: "Hood", sort: "desc", operator: "set" });
    for (const [user_id, score] of [["n1", 600], ["n2", 500], ["n3", 400], ["n4", 300], ["n5", 200], ["n6", 100]]) {
      await server.submit(key, { board: "hood", user_id, score });
    }
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    try {
      const p = await ctx.newPage();
      const reads = []; // the page's lookups of n3 (GET /api/leaderboard/rank/n3?…)
      p.on("request", (req) => {
        if (new URL(req.url()).pathname === "/api/leaderboard/rank/n3") reads.push(Date.now());
      });
      const around = () =>
        p.$$eval("table.around tbody tr", (trs) =>
          trs.map((tr) => `${tr.querySelector(".col-rank")?.textContent}:${tr.querySelector(".name")?.textContent}:${tr.querySelector(".col-score")?.textContent}`),
        );
      await p.goto(`${server.url}/?board=hood&player=n3`);
      await waitFor("connected", async () => (await statusOf(p)).state === "connected", { timeoutMs: 15_000 });
      await waitFor("around n3", async () => (await around()).join() === "1:n1:600,2:n2:500,3:n3:400,4:n4:300,5:n5:200,6:n6:100");
      await sleep(1500); // whatever the page load read has been read

      // A neighbour's score changes, n3's rank and score do not (no rank push for n3): the board's top
      // snapshot alone must bring the around table up to date.
      let mark = reads.length;
      await server.submit(key, { board: "hood", user_id: "n5", score: 250 });
      await waitFor("the board shows n5's 250", async () => (await boardRows(p)).find((r) => r.user === "n5")?.score === "250", { timeoutMs: 3000 });
      await waitFor("the around table shows n5's 250", async () => (await around()).join() === "1:n1:600,2:n2:500,3:n3:400,4:n4:300,5:n5:250,6:n6:100", {
        timeoutMs: 3000,
        intervalMs: 25,
      });
      t.diagnostic(`lookups for the first change: ${reads.length - mark}`);
      assert.ok(reads.length - mark >= 1 && reads.length - mark <= 2, `lookups: ${reads.length - mark}`);

      // A neighbour passes n3: a top snapshot and a rank push for n3 about the same change, read once
      // (twice at most, when the rank push carries a newer seq than the snapshot).
      await sleep(1200);
      mark = reads.length;
      await server.submit(key, { board: "hood", user_id: "n4", score: 450 });
      await waitFor("n3 rank 4", async () => (await p.textContent("[data-testid=player-rank]")) === "4", { timeoutMs: 3000 });
      await waitFor("the around table with n4 above n3", async () => (await around()).join() === "1:n1:600,2:n2:500,3:n4:450,4:n3:400,5:n5:250,6:n6:100", {
        timeoutMs: 3000,
        intervalMs: 25,
      });
      assert.equal(await p.textContent("table.around tr.me .col-rank"), "4");
      assert.ok(reads.length - mark >= 1 && reads.length - mark <= 2, `lookups: ${reads.length - mark}`);

      // A burst: 6 changes over about 1.2 s are read at most once a second (at once, a second later, and a
      // second after that if the last change came after the second read started), and the last is on screen.
      await sleep(1200);
      mark = reads.length;
      const burstStart = Date.now();
      for (let i = 1; i <= 6; i++) {
        if (i > 1) await sleep(200);
        await server.submit(key, { board: "hood", user_id: "n6", score: 100 + i });
      }
      const span = (Date.now() - burstStart) / 1000; // from the first change to the last
      await waitFor("the last of the burst", async () => (await around()).at(-1) === "6:n6:106", { timeoutMs: 3000, intervalMs: 25 });
      await sleep(1500);
      const burst = reads.length - mark;
      t.diagnostic(`lookups for 6 changes over ${span.toFixed(2)} s: ${burst}`);
      assert.ok(burst >= 2 && burst <= Math.floor(span) + 2, `lookups for 6 changes over ${span.toFixed(2)} s: ${burst}`);

      // Nothing changes: nothing is read (no polling).
      mark = reads.length;
      await sleep(3000);
      assert.equal(reads.length, mark, "no lookup while the board does not change");
    } finally {
      await ctx.close();
    }
  });

  test("TV mode on an asc board says 'lower is better' and shows times", async () => {
    const ctx = await browser.newContext({ viewport: { width: 1920, height: 1080 }, colorScheme: "dark" });
    const tv = await ctx.newPage();
    try {
      await tv.goto(`${server.url}/?screen=1&board=laps`);
      await waitFor("tv times", async () => (await boardRows(tv)).map((r) => r.score).join() === "0:59.999,1:23.456,1:02:03.004");
      const note = tv.locator("[data-testid=sort-note]");
      await note.waitFor({ state: "visible", timeout: 5000 });
      assert.equal((await note.textContent()).trim(), "(lower is better)");
      const box = await note.boundingBox();
      assert.ok(box && box.height >= 10 && box.x >= 0 && box.x + box.width <= 1920 && box.y >= 0, `note at ${JSON.stringify(box)}`);
      // On a desc board there is nothing to say.
      await tv.goto(`${server.url}/?screen=1`);
      await waitFor("a global snapshot", async () => Boolean(await tv.getAttribute("table.board", "data-seq")));
      assert.equal(await tv.locator("[data-testid=sort-note]").count(), 0);
    } finally {
      await ctx.close();
    }
  });

  test("long names: one line with an ellipsis, 16-digit scores never cut (phone width and TV mode)", async () => {
    const longName = "Maximilian Alexander Fitzgerald-Worthington, the Magnificent III"; // 64 characters
    const longId = "speedrunner.maximilian-alexander-fitzgerald-worthington-the-3rd4"; // 64 characters
    const unbroken = "Wolfeschlegelsteinhausenbergerdorffwelchevoralternwarengewissenh"; // 64, no space
    assert.equal(longName.length, 64);
    assert.equal(longId.length, 64);
    await server.createBoard(await admin(), { id: "wide", title: "Wide", sort: "desc", operator: "set" });
    const topScore = 9_007_199_254_740_991; // 2^53 - 1: 16 digits, the largest score there is
    await server.submit(key, { board: "wide", user_id: longId, display_name: longName, score: topScore });
    await server.submit(key, { board: "wide", user_id: "w-unbroken", display_name: unbroken, score: topScore - 1 });
    await server.submit(key, { board: "wide", user_id: "w-short", display_name: "Al", score: 1_234_567_890_123_456 });
    const shownScore = topScore.toLocaleString("en-US");

    const phone = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
    try {
      const p = await phone.newPage();
      await p.goto(`${server.url}/?board=wide&player=${longId}`);
      await waitFor("3 rows", async () => (await boardRows(p)).length === 3);
      await waitFor("score card", async () => (await p.textContent("[data-testid=player-score]")) === shownScore);
      await waitFor("around table", async () => (await p.locator("table.around tbody tr").count()) === 3);
      assertLayout(await layoutOf(p), { cut: [longName, longId, unbroken], topScore: shownScore, where: "phone" });
    } finally {
      await phone.close();
    }
    for (const [width, height] of [[1920, 1080], [1280, 720]]) {
      const tv = await browser.newContext({ viewport: { width, height }, colorScheme: "dark" });
      try {
        const p = await tv.newPage();
        await p.goto(`${server.url}/?screen=1&board=wide`);
        await waitFor("3 rows", async () => (await boardRows(p)).length === 3);
        const where = `TV ${width}x${height}`;
        assertLayout(await layoutOf(p), { cut: [longName, unbroken], topScore: shownScore, where });
      } finally {
        await tv.close();
      }
    }
  });

  test("screenshots of the live board and of ?screen=1", async () => {
    mkdirSync(IMG_DIR, { recursive: true });
    // A realistic board: ~24 named players with spread-out totals (several submissions each).
    let s = 7;
    const rnd = () => ((s = (s * 48271) % 2147483647) / 2147483647);
    for (const [id, name] of ROSTER) {
      const games = 2 + Math.floor(rnd() * 4);
      for (let g = 0; g < games; g++) {
        await server.submit(key, { user_id: id, display_name: name, score: 900 + Math.floor(rnd() * 2600) });
      }
    }
    await page.setViewportSize({ width: 1280, height: 860 });
    await page.goto(`${server.url}/?player=luna`);
    await waitFor("connected", async () => (await statusOf(page)).state === "connected");
    await waitFor("10 rows", async () => (await boardRows(page)).length === 10);
    await waitFor("luna's rank", async () => Number(await page.textContent("[data-testid=player-rank]")) > 0);
    // One live move into the top 10, so the screenshot shows the followed row, the move marks and a toast.
    const entries = (await server.top("global", 100)).entries;
    const luna = entries.find((e) => e.user_id === "luna");
    const fourth = entries.find((e) => e.rank === 4);
    assert.ok(luna && fourth && luna.rank > 4, "luna starts below rank 4");
    await server.submit(key, { user_id: "luna", score: fourth.score - luna.score + 40 });
    await page.locator("[data-testid=toast]", { hasText: `↑ ${luna.rank} → 4` }).waitFor({ timeout: 3000 });
    await waitFor("luna on the board", async () => (await boardRows(page))[3]?.user === "luna", { timeoutMs: 3000 });
    await waitFor("neighbourhood refreshed", async () =>
      (await page.textContent("table.around tr.me td")) === "4",
    );
    await sleep(400); // the reorder animation has finished; the move marks are still showing
    await page.screenshot({ path: join(IMG_DIR, "board.png") });

    const tv = await browser.newContext({ viewport: { width: 1920, height: 1080 }, colorScheme: "dark" });
    const p4 = await tv.newPage();
    try {
      await p4.goto(`${server.url}/?screen=1`);
      await waitFor("tv rows", async () => (await boardRows(p4)).length === 10);
      assert.equal(await p4.locator("form, input, select, button").count(), 0, "TV mode has no controls");
      const lastRow = await p4.locator("table.board tbody tr[data-user]").last().boundingBox();
      assert.ok(lastRow && lastRow.y + lastRow.height <= 1080, "all 10 rows fit on the TV screen");
      await sleep(600);
      await p4.screenshot({ path: join(IMG_DIR, "screen.png") });
    } finally {
      await tv.close();
    }
    assert.deepEqual(pageErrors, [], "no page errors");
  });

  test("under demo traffic (leaderboard.demo) the board keeps up and ends equal to the server's top 10", async (t) => {
    // A fresh board, so every demo submission moves its top 10.
    await server.createBoard(await admin(), { id: "arena", title: "Arena", sort: "desc", operator: "incr" });
    await page.goto(`${server.url}/?board=arena`);
    await waitFor("connected", async () => (await statusOf(page)).state === "connected");
    assert.equal(await page.inputValue(".picker select"), "arena");
    await waitFor("empty arena board", async () => /No scores/.test(await page.textContent("table.board tbody")));

    const python = join(REPO, ".venv", "bin", "python");
    const seqs = new Set();
    const demo = spawn(
      python,
      ["-m", "leaderboard.demo", "--url", server.url, "--key", key, "--players", "300", "--rate", "60",
        "--duration", "8", "--seed", "5", "--connections", "3", "--board", "arena"],
      { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    demo.stdout.on("data", (d) => (out += d));
    demo.stderr.on("data", (d) => (out += d));
    const exited = new Promise((r) => demo.once("exit", (code) => r(code)));
    try {
      const deadline = Date.now() + 30_000;
      let code = null;
      while (code === null && Date.now() < deadline) {
        seqs.add(await page.getAttribute("table.board", "data-seq"));
        code = await Promise.race([exited, sleep(250).then(() => null)]);
      }
      assert.equal(code, 0, `demo exited with ${code}:\n${out}`);
    } finally {
      if (demo.exitCode === null) demo.kill("SIGTERM");
    }
    assert.match(out, /acked=\d+/);
    t.diagnostic(`${seqs.size} distinct snapshots seen; demo said: ${out.trim().split("\n").at(-1)}`);
    assert.ok(seqs.size >= 10, `the page applied ${seqs.size} distinct snapshots while the demo ran`);
    const truth = await server.top("arena");
    assert.equal(truth.entries.length, 10);
    await waitFor("board equals GET /top after the demo", async () => {
      const shown = await boardRows(page);
      return (
        JSON.stringify(shown.map((r) => [r.rank, r.user, r.score])) ===
        JSON.stringify(truth.entries.map((e) => [e.rank, e.user_id, e.score.toLocaleString("en-US")]))
      );
    }, { timeoutMs: 3000 });
    assert.deepEqual(pageErrors, [], "no page errors");
  });

  test("seasons: a reset seen live (banner with the winners, the new season empty), past standings, TV mode, and a scheduled reset counting down to zero", async (t) => {
    const adminKey = await admin();
    const errors = [];
    const watch = (p) => p.on("pageerror", (err) => errors.push(String(err)));
    const en = (n) => n.toLocaleString("en-US");
    // A board that resets every minute, followed in a page of its own while the rest of this test runs: at the
    // end it must have gone through a scheduled reset by itself.
    await server.createBoard(adminKey, { id: "minutely", title: "Minutely", sort: "desc", operator: "incr", reset: "* * * * *" });
    const tickCtx = await browser.newContext({ viewport: { width: 1000, height: 760 } });
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "dark" });
    const tvCtx = await browser.newContext({ viewport: { width: 1920, height: 1080 }, colorScheme: "dark" });
    try {
      const tick = await tickCtx.newPage();
      watch(tick);
      await tick.goto(`${server.url}/?board=minutely`);
      await tick.locator("[data-testid=countdown]").waitFor();
      // Opened in the last seconds of a minute, the log below would hold too few ticks before zero to say
      // anything: start it on the next season instead.
      const left = countdownSeconds(await tick.textContent("[data-testid=countdown]"));
      if (left === null || left[0] <= 5) {
        const season = await seasonOf(tick);
        await waitFor("past the minute's reset", async () => (await seasonOf(tick)) > season, { timeoutMs: 15_000, intervalMs: 100 });
        await waitFor("the next countdown", async () => countdownSeconds(await tick.textContent("[data-testid=countdown]")) !== null);
      }
      const startSeason = await seasonOf(tick);
      await tick.evaluate(() => {
        const log = (window.__countdown = []);
        const record = () => {
          const text = document.querySelector("[data-testid=countdown]")?.textContent ?? "(none)";
          if (log.at(-1) !== text) log.push(text);
        };
        record();
        new MutationObserver(record).observe(document.querySelector(".col-board"), { subtree: true, childList: true, characterData: true });
      });
      await server.submit(key, { board: "minutely", user_id: "tic", display_name: "Tic Toc", score: 3 });

      // A monthly board with 13 players (two pages of final standings).
      await server.createBoard(adminKey, { id: "cup", title: "Cup", sort: "desc", operator: "best", reset: "monthly" });
      const players = [["ana", "Ana Ace", 900], ["bo", "Bo Brave", 700], ["cy", "Cy Clone", 500], ["di", null, 300]];
      for (let i = 0; i < 9; i++) players.push([`extra-${i}`, null, 100 + i]);
      for (const [user_id, display_name, score] of players) {
        await server.submit(key, { board: "cup", user_id, score, ...(display_name ? { display_name } : {}) });
      }
      const podium = [...players].sort((a, b) => b[2] - a[2]).slice(0, 3);
      const p = await ctx.newPage();
      watch(p);
      const sent = [];
      p.on("websocket", (ws) => ws.on("framesent", (f) => sent.push({ at: Date.now(), frame: String(f.payload) })));
      await p.goto(`${server.url}/?board=cup&player=bo`);
      await waitFor("connected", async () => (await statusOf(p)).state === "connected", { timeoutMs: 15_000 });
      await waitFor("10 rows", async () => (await boardRows(p)).length === 10);
      await waitFor("bo's rank", async () => (await p.textContent("[data-testid=player-rank]")) === "2");
      assert.equal((await p.textContent("[data-testid=season]")).trim(), "Season 1");
      await assertCountdown(server, p, "cup", "cup, season 1");
      assert.equal(await p.getByRole("button", { name: "Past seasons" }).count(), 0, "nothing has ended yet");
      const seqBefore = Number(await p.getAttribute("table.board", "data-seq"));

      // The admin ends the season: the page says so with the winners, and moves to the new (empty) season.
      const reply = await server.reset(adminKey, "cup");
      assert.deepEqual([reply.ended.season, reply.ended.total, reply.season], [1, players.length, 2]);
      const banner = p.getByRole("region", { name: "Season 1 ended" });
      await banner.waitFor({ timeout: 3000 });
      const truth = await server.get("/api/leaderboard/top?board=cup&season=1&limit=3");
      const expected = podium.map(([id, name, score]) => [name ?? id, en(score)]);
      assert.deepEqual(truth.entries.map((e) => [e.display_name ?? e.user_id, en(e.score)]), expected);
      const winners = await banner.locator("ol li").evaluateAll((lis) =>
        lis.map((li) => [li.querySelector(".name")?.textContent, li.querySelector(".winner-score")?.textContent]),
      );
      assert.deepEqual(winners, expected);
      await waitFor("season 2", async () => (await p.textContent("[data-testid=season]")).trim() === "Season 2");
      await waitFor("an empty board", async () =>
        (await boardRows(p)).length === 0 && /No scores/.test(await p.textContent("table.board tbody")),
      );
      assert.ok(Number(await p.getAttribute("table.board", "data-seq")) > seqBefore);
      await waitFor("bo has no entry in season 2", async () => (await p.locator("[data-testid=no-entry]").count()) === 1);
      const spoken = `Season 1 ended. Winners: ${podium.map(([id, name], i) => `${i + 1} ${name ?? id}`).join(", ")}.`;
      assert.ok((await p.textContent("[data-testid=live-region]")).startsWith(spoken), "announced in the live region");
      await assertCountdown(server, p, "cup", "cup, season 2");
      // The new season is live.
      await server.submit(key, { board: "cup", user_id: "eve", display_name: "Eve New", score: 42 });
      await waitFor("eve on the season 2 board", async () => (await boardRows(p)).map((r) => r.user).join() === "eve");

      // Past seasons: season 1's final standings, a page at a time, read over REST and never subscribed to.
      await banner.getByRole("button", { name: "Final standings of season 1" }).click();
      const pastFrom = Date.now();
      const standings = p.getByRole("table", { name: /Season 1 · final standings/ });
      await standings.waitFor();
      assert.equal(await p.getByRole("combobox", { name: "Season" }).inputValue(), "1");
      assert.match(p.url(), /[?&]view=seasons&season=1(&|$)/);
      assert.equal(await p.locator("table.board:not(.standings-table)").count(), 0, "the live board is not shown");
      const rowsOf = () =>
        standings.locator("tbody tr[data-user]").evaluateAll((rows) =>
          rows.map((r) => [Number(r.querySelector(".rank-badge")?.textContent), r.getAttribute("data-user"), r.querySelector(".col-score")?.textContent]),
        );
      const asRows = (page) => page.entries.map((e) => [e.rank, e.user_id, en(e.score)]);
      const first = await server.get("/api/leaderboard/top?board=cup&season=1&limit=10");
      await waitFor("season 1, page 1", async () => JSON.stringify(await rowsOf()) === JSON.stringify(asRows(first)));
      assert.match(await standings.locator("caption").textContent(), new RegExp(`1–10 of ${players.length} players`));
      await p.getByRole("button", { name: "Next" }).click();
      const second = await server.get("/api/leaderboard/top?board=cup&season=1&limit=10&offset=10");
      assert.equal(second.entries.length, players.length - 10);
      await waitFor("season 1, page 2", async () => JSON.stringify(await rowsOf()) === JSON.stringify(asRows(second)));
      assert.ok(await p.getByRole("button", { name: "Next" }).isDisabled());

      const find = p.getByRole("search", { name: "Find a player in season 1" });
      await find.getByRole("textbox").fill("cy");
      await find.getByRole("button", { name: "Find" }).click();
      const cy = await server.get("/api/leaderboard/rank/cy?board=cup&season=1&around=3");
      await waitFor("cy's final rank", async () => (await p.textContent("[data-testid=season-player-rank]")) === String(cy.rank));
      assert.equal(await p.textContent("[data-testid=season-player-score]"), en(cy.score));
      await find.getByRole("textbox").fill("eve"); // she scored in season 2 only
      await find.getByRole("button", { name: "Find" }).click();
      await waitFor("no entry for eve in season 1", async () =>
        /No entry for eve in season 1/.test(await p.textContent("[data-testid=season-player-result]")),
      );
      const subscribed = sent.filter((f) => f.at >= pastFrom && /"type":"subscribe"/.test(f.frame));
      assert.deepEqual(subscribed, [], "an ended season is not subscribed to");

      await p.getByRole("button", { name: "Back to the live board" }).click();
      await waitFor("the live board again", async () => (await boardRows(p)).map((r) => r.user).join() === "eve");
      assert.doesNotMatch(p.url(), /view=|season=/);

      // Many seasons (a daily board after a month): the list is paged, older pages load on demand.
      await server.createBoard(adminKey, { id: "many", title: "Many", sort: "desc", operator: "incr" });
      for (let i = 0; i < 26; i++) await server.reset(adminKey, "many"); // seasons 1-26 ended, 27 live
      await p.goto(`${server.url}/?board=many&view=seasons`);
      const options = p.getByRole("combobox", { name: "Season" }).locator("option");
      await waitFor("the first page of seasons", async () => (await options.count()) === 24); // 25 with the live one
      assert.equal(await p.getByRole("combobox", { name: "Season" }).inputValue(), "26");
      await p.getByRole("button", { name: "Older seasons" }).click();
      await waitFor("the older seasons appended", async () => (await options.count()) === 26);
      assert.deepEqual(
        (await options.allTextContents()).slice(-2).map((t) => t.split(" (")[0]),
        ["Season 2", "Season 1"],
      );
      assert.equal(await p.getByRole("button", { name: "Older seasons" }).count(), 0, "no older season left");

      // A season that does not exist is a message, not a crash; the view fits a phone.
      await p.goto(`${server.url}/?board=cup&view=seasons&season=99`);
      await p.getByText("There is no season 99 of Cup.").waitFor({ timeout: 5000 });
      await p.setViewportSize({ width: 375, height: 740 });
      await p.goto(`${server.url}/?board=cup&view=seasons&season=1`);
      await waitFor("season 1 on a phone", async () => JSON.stringify(await rowsOf()) === JSON.stringify(asRows(first)));
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `horizontal overflow ${overflow}px`);

      // TV mode: the countdown in the header, and the banner over the board, without controls.
      const tv = await tvCtx.newPage();
      watch(tv);
      await tv.goto(`${server.url}/?screen=1&board=cup`);
      await waitFor("tv: eve", async () => (await boardRows(tv)).map((r) => r.user).join() === "eve");
      assert.equal((await tv.textContent("[data-testid=season]")).trim(), "Season 2");
      await assertCountdown(server, tv, "cup", "TV");
      await server.reset(adminKey, "cup");
      const tvBanner = tv.getByRole("region", { name: "Season 2 ended" });
      await tvBanner.waitFor({ timeout: 3000 });
      assert.deepEqual(await tvBanner.locator("ol li .name").allTextContents(), ["Eve New"]);
      await waitFor("tv: season 3, empty", async () =>
        (await tv.textContent("[data-testid=season]")).trim() === "Season 3" && (await boardRows(tv)).length === 0,
      );
      assert.equal(await tv.locator("form, input, select, button").count(), 0, "TV mode has no controls");
      const box = await tvBanner.boundingBox();
      assert.ok(box && box.x >= 0 && box.y >= 0 && box.x + box.width <= 1920 && box.y + box.height <= 1080, `banner at ${JSON.stringify(box)}`);

      // The scheduled reset of the minutely board: its countdown reached zero, never went below, and the page
      // moved to the next season by itself (the season frame, then the board read again).
      const waitedFrom = Date.now();
      await waitFor(`minutely: season ${startSeason + 1}`, async () => (await seasonOf(tick)) > startSeason, {
        timeoutMs: 75_000,
        intervalMs: 250,
      });
      t.diagnostic(`waited ${((Date.now() - waitedFrom) / 1000).toFixed(1)} s for the minutely reset`);
      // (the season before the live one: this test may have taken long enough for more than one reset)
      const endedSeason = (await seasonOf(tick)) - 1;
      const ended = (await server.get("/api/leaderboards/minutely/seasons")).seasons.find((s) => s.season === endedSeason);
      assert.ok(ended?.ended_at, `season ${endedSeason} of minutely has ended`);
      const tickBanner = tick.getByRole("region", { name: `Season ${endedSeason} ended` });
      await tickBanner.waitFor({ timeout: 3000 });
      if (ended.winners.length) {
        assert.deepEqual(await tickBanner.locator("ol li .name").allTextContents(), ended.winners.map((w) => w.display_name ?? w.user_id));
      } else {
        await tickBanner.getByText("Nobody scored in it.").waitFor({ timeout: 1000 });
      }
      await waitFor("the next countdown", async () => countdownSeconds(await tick.textContent("[data-testid=countdown]")) !== null);
      await assertCountdown(server, tick, "minutely", "minutely, after its scheduled reset");
      const log = await tick.evaluate(() => window.__countdown);
      const zero = log.indexOf("resetting now…");
      t.diagnostic(`countdown around the reset: ${log.slice(Math.max(0, zero - 3), zero + 2).join(" | ")}`);
      for (const text of log) assert.ok(text === "resetting now…" || countdownSeconds(text) !== null, `the countdown read "${text}"`);
      assert.ok(zero > 0, `the countdown reached zero: ${log.join(" | ")}`);
      const before = log.slice(0, zero).map((text) => countdownSeconds(text)?.[0]);
      assert.ok(before.length >= 3, `it ticked: ${log.slice(0, zero).join(" | ")}`);
      for (let i = 1; i < before.length; i++) assert.ok(before[i] < before[i - 1], `counting down: ${log.slice(0, zero).join(" | ")}`);
      assert.ok(before.at(-1) <= 2, `the last second before zero: ${log[zero - 1]}`);
      assert.deepEqual(errors, [], "no page errors");
    } finally {
      await tickCtx.close();
      await ctx.close();
      await tvCtx.close();
    }
  });

  test("Postgres unreachable: the status says connected but degraded, the picker that it has no boards; both recover", async (t) => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "dark" });
    const p = await ctx.newPage();
    const readyz = [];
    p.on("request", (req) => {
      if (new URL(req.url()).pathname === "/readyz") readyz.push(Date.now());
    });
    // More than the one board the picker falls back to.
    await server.createBoard(await admin(), { id: "spare", title: "Spare", sort: "desc", operator: "incr" });
    const boardCount = (await server.boards()).length;
    assert.ok(boardCount >= 2);
    await server.postgres("stop");
    try {
      const health = await fetch(`${server.url}/readyz`);
      assert.equal(health.status, 503, "the server notices the outage");
      await p.goto(`${server.url}/`);
      // The socket is fine (the board is served from Redis); the page must not claim all is well.
      // (the /readyz answer may come before the socket opens: wait for both)
      const connectedWith = async (health) =>
        (await statusOf(p)).state === "connected" && (await p.getAttribute(".status", "data-health")) === health;
      await waitFor("connected but degraded", () => connectedWith("degraded"), { timeoutMs: 10_000 });
      const status = await statusOf(p);
      assert.match(status.text, /^Connected — degraded: .*(database|postgres)/i);
      assert.match(await p.getAttribute(".status", "class"), /status-degraded/);
      t.diagnostic(`status: ${status.text}`);
      // GET /api/leaderboards answers 503: the picker says so instead of silently offering only "global".
      const failed = p.locator("[data-testid=boards-error]");
      await failed.waitFor({ state: "visible", timeout: 5000 });
      assert.equal((await failed.textContent()).trim(), "could not load boards — retry");
      assert.match(await failed.getAttribute("title"), /503/);
      await failed.locator("button").click(); // still down: still says so
      await waitFor("retried and failed again", async () => (await failed.locator("button").isEnabled()) && (await failed.isVisible()));
      // A server that sends `status` frames probes its dependencies about once a second: keep the outage
      // long enough for it to notice, so its frame (not only /readyz) drives the page, which stays degraded.
      await sleep(3000);
      assert.equal(await p.getAttribute(".status", "data-health"), "degraded");
      t.diagnostic(`status after 3 s: ${(await statusOf(p)).text}`);
    } finally {
      await server.postgres("start");
    }
    try {
      // Back to plain "Connected": through the status frame at once, or the next /readyz poll (<= 10 s).
      await waitFor("healthy again", async () => (await statusOf(p)).text === "Connected", { timeoutMs: 15_000 });
      assert.equal(await p.getAttribute(".status", "data-health"), "ok");
      t.diagnostic(`${readyz.length} GET /readyz from the page`);
      // Healthy again, the picker reloads its list by itself.
      await waitFor("all boards", async () => (await p.locator(".picker select option").count()) === boardCount, { timeoutMs: 5000 });
      assert.equal(await p.locator("[data-testid=boards-error]").count(), 0);

      // A network error on the list says so too, and "retry" loads it.
      let listRequests = 0;
      await p.route("**/api/leaderboards", (route) => {
        listRequests += 1;
        return route.abort("connectionrefused");
      });
      await p.reload();
      await p.locator("[data-testid=boards-error]").waitFor({ state: "visible", timeout: 5000 });
      assert.equal(await p.locator(".picker select option").count(), 1, "only the fallback board");
      // The healthy server makes the picker retry once by itself; let that fail too before the network is back.
      await waitFor("the automatic retry", async () =>
        listRequests >= 2 && (await p.getAttribute(".status", "data-health")) === "ok" &&
        (await p.locator("[data-testid=boards-error] button").isEnabled()),
      );
      await p.unroute("**/api/leaderboards");
      await p.click("[data-testid=boards-error] button");
      await waitFor("boards after retry", async () => (await p.locator(".picker select option").count()) === boardCount);
      assert.equal(await p.locator("[data-testid=boards-error]").count(), 0);
    } finally {
      await ctx.close();
    }
  });
});
