// End-to-end: the operator view (/admin) against the real server (embedded Postgres + Valkey), the built client
// (client/dist) and real Chromium. Run with `npm run e2e` (builds first) or `npm run e2e:only`.
// The tests run in order and share one server, one operator page and one public page.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { LeaderboardServer, REPO, boardRows, launchBrowser, sleep, statusOf, waitFor } from "./harness.mjs";

/** A moderation call straight to the API (to act "behind the operator's back"). */
async function api(server, key, method, path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: await res.json() };
}

const text = async (page, selector) => ((await page.textContent(selector)) ?? "").trim();

describe("operator view (/admin) against the real server", { timeout: 300_000 }, () => {
  /** @type {LeaderboardServer} */
  let server;
  let submitKey;
  let adminKey;
  let readKey;
  let browser;
  let ops; // the operator's page
  let board; // the public board, in another context (another "person")
  const errors = [];
  const sessions = {};

  before(async () => {
    server = await LeaderboardServer.create();
    await server.start();
    [submitKey, adminKey, readKey] = await Promise.all([
      server.createKey("submit", "e2e-game"),
      server.createKey("admin", "ops-e2e"),
      server.createKey("read", "e2e-read"),
    ]);
    // global (incr): alice 100 + 50 = 150, bob 120, carol 90, dave 60
    sessions.alice100 = (await server.submit(submitKey, { user_id: "alice", score: 100, display_name: "Alice" })).session_id;
    await sleep(5); // distinct submitted_at, so "newest first" is well defined
    sessions.alice50 = (await server.submit(submitKey, { user_id: "alice", score: 50 })).session_id;
    await server.submit(submitKey, { user_id: "bob", score: 120, display_name: "Bob" });
    sessions.carol = (await server.submit(submitKey, { user_id: "carol", score: 90, display_name: "Carol" })).session_id;
    await server.submit(submitKey, { user_id: "dave", score: 60, display_name: "Dave" });
    browser = await launchBrowser();
    const opsCtx = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "dark" });
    const boardCtx = await browser.newContext({ viewport: { width: 1000, height: 800 }, colorScheme: "dark" });
    ops = await opsCtx.newPage();
    board = await boardCtx.newPage();
    for (const p of [ops, board]) {
      p.setDefaultTimeout(10_000);
      p.on("pageerror", (err) => errors.push(String(err)));
      p.on("console", (msg) => {
        // (the key checks answer 401/403 on purpose: Chromium logs those as failed resources)
        if (msg.type() === "error" && !/Failed to load resource|WebSocket connection .* failed/.test(msg.text())) errors.push(msg.text());
      });
    }
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await server?.destroy();
  });

  test("GET /admin serves the UI; it asks for an admin key and refuses others", async () => {
    const res = await fetch(`${server.url}/admin`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type"), /text\/html/);
    assert.match(await res.text(), /<div id="root">/);

    await board.goto(`${server.url}/`);
    await waitFor("public board connected", async () => (await statusOf(board)).state === "connected", { timeoutMs: 15_000 });
    await waitFor("public board", async () => (await boardRows(board)).map((r) => r.user).join() === "alice,bob,carol,dave");

    await ops.goto(`${server.url}/admin`);
    await waitFor("the title", async () => (await ops.title()) === "Operator · Leaderboard");
    const keyInput = ops.getByLabel("Admin API key");
    await keyInput.waitFor();
    assert.ok(await keyInput.evaluate((el) => el === document.activeElement), "the key field has the focus");
    assert.equal(await keyInput.getAttribute("type"), "password");

    // An unknown key, then a key that is not an admin key: each refused with the server's detail.
    await keyInput.fill("lbk_not-a-real-key");
    await keyInput.press("Enter");
    await waitFor("401 message", async () => /not accepted/.test(await text(ops, "[data-testid=key-error]")));
    await keyInput.fill(readKey);
    await ops.getByRole("button", { name: "Use this key" }).click();
    await waitFor("403 message", async () => /not an admin key: .*admin key/.test(await text(ops, "[data-testid=key-error]")));
    assert.equal(await ops.evaluate(() => sessionStorage.length + localStorage.length), 0, "a refused key is not kept");

    await keyInput.fill(adminKey);
    await keyInput.press("Enter");
    await ops.getByRole("heading", { name: "Find a player" }).waitFor();
    const stored = await ops.evaluate(() => ({ session: { ...sessionStorage }, local: { ...localStorage } }));
    assert.deepEqual(stored.local, {}, "nothing in localStorage");
    assert.equal(stored.session["leaderboard.adminKey"], adminKey, "the key is in sessionStorage");
    // The audit log is read with the key: empty so far.
    await ops.getByText("No moderation action yet.").waitFor();
  });

  test("find a player: rank, score, ban status and their submissions, newest first", async () => {
    await ops.locator("form[role=search] input").fill("alice");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("alice's rank", async () => (await text(ops, "[data-testid=op-rank]")) === "1");
    assert.equal(await text(ops, "[data-testid=op-score]"), "150");
    assert.equal(await text(ops, "[data-testid=op-status]"), "Not banned");
    const rows = ops.locator("[data-testid=submission]");
    await waitFor("two submissions", async () => (await rows.count()) === 2);
    assert.deepEqual(
      await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute("data-session"))),
      [sessions.alice50, sessions.alice100],
      "newest first",
    );
    assert.match(new URL(ops.url()).search, /player=alice/);

    // Nobody: no entry, nothing to remove.
    await ops.locator("form[role=search] input").fill("nobody-here");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("no entry", async () => (await text(ops, "[data-testid=op-rank]")) === "No entry");
    assert.match(await text(ops, "[data-testid=op-no-entry]"), /nobody-here has no entry on Global/);
    assert.ok(await ops.getByRole("button", { name: /^Remove from/ }).isDisabled());
    await ops.getByText("No submission on Global.").waitFor();
  });

  test("void a submission: reason required, confirmed, and the public board changes live", async (t) => {
    await ops.locator("form[role=search] input").fill("alice");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("alice's submissions", async () => (await ops.locator("[data-testid=submission]").count()) === 2);

    const row = ops.locator(`[data-testid=submission][data-session="${sessions.alice50}"]`);
    await row.getByRole("button", { name: /^Void the 50/ }).click();
    const dialog = ops.getByRole("dialog", { name: /^Void submission/ });
    await dialog.waitFor();
    assert.match(await dialog.textContent(), /Void the 50 that alice submitted on global \(season 1\).*It can be restored while season 1 is live\./);
    assert.doesNotMatch(await dialog.textContent(), /cannot be undone/);
    const reason = dialog.getByLabel(/^Reason/);
    assert.ok(await reason.evaluate((el) => el === document.activeElement), "the reason field has the focus");

    // No reason: refused before anything is sent.
    await dialog.getByRole("button", { name: "Void submission" }).click();
    await waitFor("reason required", async () => /required/.test(await text(ops, "[data-testid=reason-error]")));
    assert.equal(await reason.getAttribute("aria-invalid"), "true");

    await reason.fill("impossible score (speed hack), ticket #4711");
    const before = (await boardRows(board)).find((r) => r.user === "alice");
    assert.deepEqual([before.rank, before.score], [1, "150"]);
    await reason.press("Enter");
    const t0 = Date.now();
    await waitFor("outcome", async () => /Voided submission .*alice's score on global is now 100/.test(await text(ops, "[data-testid=op-outcome]")));
    assert.equal(await dialog.isVisible(), false, "the dialog closed");
    assert.ok(await ops.locator("[data-testid=op-outcome]").evaluate((el) => el === document.activeElement), "focus on the outcome");

    // The public board, in another browser context, gets it over its WebSocket.
    await waitFor(
      "public board: bob first, alice 100 second",
      async () => {
        const rows = await boardRows(board);
        return rows[0]?.user === "bob" && rows[1]?.user === "alice" && rows[1]?.score === "100" && rows[1]?.rank === 2;
      },
      { timeoutMs: 3000, intervalMs: 25 },
    );
    t.diagnostic(`public board updated ${Date.now() - t0} ms after the void was acknowledged`);

    // The operator's view is read again: rank 2, the submission marked voided, Restore instead of Void on it.
    await waitFor("alice rank 2", async () => (await text(ops, "[data-testid=op-rank]")) === "2");
    assert.equal(await text(ops, "[data-testid=op-score]"), "100");
    await waitFor("row voided", async () => (await row.getAttribute("class")) === "voided");
    assert.equal(await row.getByRole("button", { name: /^Void/ }).count(), 0);
    assert.equal(await row.getByRole("button", { name: /^Restore the 50/ }).count(), 1);
    assert.equal(await text(ops, `[data-testid=submission][data-session="${sessions.alice50}"] .state-voided`), "voided");
    // ...and the audit log.
    const first = ops.locator("[data-testid=audit-entry]").first();
    await waitFor("audit: void", async () => (await first.getAttribute("data-action")) === "void");
    assert.match(await first.textContent(), /voided submission .* of alice on global — score now 100/);
    assert.match(await first.textContent(), /“impossible score \(speed hack\), ticket #4711” — ops-e2e/);
  });

  test("a refusal is shown next to the action (409 already_voided) and the view is read again", async () => {
    await ops.locator("form[role=search] input").fill("carol");
    await ops.locator("form[role=search] input").press("Enter");
    const row = ops.locator(`[data-testid=submission][data-session="${sessions.carol}"]`);
    await row.getByRole("button", { name: /^Void/ }).waitFor();
    // Another operator voids it first.
    const other = await api(server, adminKey, "POST", "/api/leaderboard/void", { session_id: sessions.carol, reason: "other operator" });
    assert.equal(other.status, 200);
    await row.getByRole("button", { name: /^Void/ }).click();
    const dialog = ops.getByRole("dialog");
    await dialog.getByLabel(/^Reason/).fill("bot account");
    await dialog.getByRole("button", { name: "Void submission" }).click();
    const problem = dialog.locator("[data-testid=action-error]");
    await problem.waitFor();
    assert.equal(await problem.getAttribute("role"), "alert");
    assert.equal(await text(ops, "[data-testid=action-error]"), "Refused: this submission is already voided (409 already_voided)");
    assert.equal(await dialog.getByLabel(/^Reason/).inputValue(), "bot account", "the reason is kept");
    // Behind the dialog the view was read again: the row is voided now. Esc closes the dialog.
    await waitFor("carol's row voided", async () => (await row.getAttribute("class")) === "voided");
    await ops.keyboard.press("Escape");
    await waitFor("dialog closed", async () => !(await dialog.isVisible()));
    assert.equal(await text(ops, "[data-testid=op-rank]"), "No entry");
  });

  test("ban and unban: the player leaves and comes back on the public board; the audit log lists both", async () => {
    await ops.locator("form[role=search] input").fill("alice");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("alice rank 2", async () => (await text(ops, "[data-testid=op-rank]")) === "2");

    // Keyboard only: the Ban button, the dialog, Cancel gives the focus back to the button.
    const banButton = ops.getByRole("button", { name: "Ban player…" });
    await banButton.focus();
    await ops.keyboard.press("Enter");
    const dialog = ops.getByRole("dialog", { name: "Ban alice" });
    await dialog.waitFor();
    await ops.keyboard.press("Escape");
    await waitFor("closed", async () => !(await dialog.isVisible()));
    assert.ok(await banButton.evaluate((el) => el === document.activeElement), "the focus went back to the Ban button");

    await ops.keyboard.press("Enter");
    await dialog.waitFor();
    assert.doesNotMatch(await dialog.textContent(), /cannot be undone/);
    await ops.keyboard.type("multi-accounting with alice2");
    await ops.keyboard.press("Enter");
    await waitFor("banned", async () => /^Banned alice: removed from global\.$/.test(await text(ops, "[data-testid=op-outcome]")));
    await waitFor("badge", async () => (await ops.locator("[data-testid=banned-badge]").count()) === 1);
    await waitFor("status", async () => (await text(ops, "[data-testid=op-status]")) === "Banned");
    assert.equal(await text(ops, "[data-testid=op-rank]"), "No entry");
    await waitFor("public board without alice", async () => (await boardRows(board)).map((r) => r.user).join() === "bob,dave", {
      timeoutMs: 3000,
      intervalMs: 25,
    });
    // A second ban elsewhere (another operator) would be refused: the API says so.
    assert.equal((await api(server, adminKey, "POST", "/api/players/alice/ban", { reason: "again" })).body.code, "already_banned");

    await ops.getByRole("button", { name: "Lift ban…" }).click();
    const lift = ops.getByRole("dialog", { name: "Lift the ban on alice" });
    await lift.getByLabel(/^Reason/).fill("appeal upheld: alice2 is her brother");
    await lift.getByRole("button", { name: "Lift ban" }).click();
    await waitFor("unbanned", async () => /^Lifted the ban on alice: restored on global \(100\)\.$/.test(await text(ops, "[data-testid=op-outcome]")));
    await waitFor("rank 2 again", async () => (await text(ops, "[data-testid=op-rank]")) === "2");
    assert.equal(await text(ops, "[data-testid=op-status]"), "Not banned");
    await waitFor("public board with alice again", async () => (await boardRows(board)).map((r) => `${r.user}:${r.score}`).join() === "bob:120,alice:100,dave:60", {
      timeoutMs: 3000,
      intervalMs: 25,
    });

    // The audit log, newest first: unban, ban, the other operator's void, the void.
    const actions = () => ops.locator("[data-testid=audit-entry]").evaluateAll((lis) => lis.map((li) => li.getAttribute("data-action")));
    await waitFor("audit: unban, ban, void, void", async () => (await actions()).join() === "unban,ban,void,void");
    const entries = ops.locator("[data-testid=audit-entry]");
    assert.match(await entries.nth(0).textContent(), /lifted the ban on alice — restored on global \(100\).*“appeal upheld: alice2 is her brother” — ops-e2e/);
    assert.match(await entries.nth(1).textContent(), /banned alice — removed from global.*“multi-accounting with alice2” — ops-e2e/);
    await ops.screenshot({ path: join(REPO, "docs", "img", "admin.png") });
    const audit = await api(server, adminKey, "GET", "/api/audit?limit=10");
    assert.deepEqual(
      audit.body.entries.map((e) => e.action),
      ["unban", "ban", "void", "void"],
      "the page shows what the API has",
    );
  });

  test("remove an entry from a board", async () => {
    await ops.locator("form[role=search] input").fill("dave");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("dave rank 3", async () => (await text(ops, "[data-testid=op-rank]")) === "3");
    await ops.getByRole("button", { name: "Remove from Global…" }).click();
    const dialog = ops.getByRole("dialog", { name: "Remove dave from global" });
    assert.match(await dialog.textContent(), /void every submission of theirs in it.*can be restored on its own while the season is live\./);
    assert.doesNotMatch(await dialog.textContent(), /cannot be undone/);
    await dialog.getByLabel(/^Reason/).fill("x".repeat(501));
    await dialog.getByRole("button", { name: "Remove entry" }).click();
    await waitFor("too long", async () => /at most 500/.test(await text(ops, "[data-testid=reason-error]")));
    await dialog.getByLabel(/^Reason/).fill("account shared with a cheater");
    await dialog.getByRole("button", { name: "Remove entry" }).click();
    await waitFor("removed", async () => /^Removed dave from global \(season 1\): 1 submission voided\.$/.test(await text(ops, "[data-testid=op-outcome]")));
    await waitFor("public board without dave", async () => (await boardRows(board)).map((r) => r.user).join() === "bob,alice", { timeoutMs: 3000 });
    await waitFor("no entry", async () => (await text(ops, "[data-testid=op-rank]")) === "No entry");
    await waitFor("audit: remove", async () => (await ops.locator("[data-testid=audit-entry]").first().getAttribute("data-action")) === "remove");
  });

  test("the audit log pages with “Older” until the first action, without duplicates", async () => {
    // 22 more actions through the API: 27 in all, the page holds 20.
    for (let i = 0; i < 22; i++) {
      const sid = (await server.submit(submitKey, { user_id: "spammer", score: 1 })).session_id;
      assert.equal((await api(server, adminKey, "POST", "/api/leaderboard/void", { session_id: sid, reason: `spam ${i}` })).status, 200);
    }
    await ops.getByRole("button", { name: "Refresh" }).last().click();
    const entries = ops.locator("[data-testid=audit-entry]");
    await waitFor("newest page", async () => /spam 21/.test((await entries.first().textContent()) ?? ""));
    assert.equal(await entries.count(), 20);
    await ops.getByRole("button", { name: "Older" }).click();
    await waitFor("27 entries", async () => (await entries.count()) === 27);
    const ids = await entries.evaluateAll((lis) => lis.map((li) => Number(li.getAttribute("data-id"))));
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), "newest first");
    assert.equal(new Set(ids).size, 27, "no duplicates");
    assert.equal(await ops.getByRole("button", { name: "Older" }).count(), 0, "no older page");
    assert.equal(await entries.last().getAttribute("data-action"), "void");
    assert.match(await entries.last().textContent(), /ticket #4711/);
    // The first entry of the older page has the focus (the button is gone).
    assert.equal(await ops.evaluate(() => document.activeElement?.getAttribute("data-id")), String(ids[20]));

    // "Show alice" in the log opens her.
    await entries.filter({ hasText: "appeal upheld" }).getByRole("button", { name: "Show alice" }).click();
    await waitFor("alice shown", async () => (await text(ops, "[data-testid=op-rank]")) === "2");
    assert.equal(await ops.locator("form[role=search] input").inputValue(), "alice");
  });

  test("restore a voided submission: reason required, it counts again on the public board, the audit log says so", async () => {
    // alice's 50 was voided above: alice has 100 (rank 2, behind bob's 120).
    await ops.locator("form[role=search] input").fill("alice");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("alice rank 2", async () => (await text(ops, "[data-testid=op-rank]")) === "2");
    const row = ops.locator(`[data-testid=submission][data-session="${sessions.alice50}"]`);
    await waitFor("alice's 50 voided", async () => (await row.getAttribute("class")) === "voided");
    assert.equal(await row.getByRole("button", { name: /^Void/ }).count(), 0);

    // Keyboard: Enter on Restore opens the dialog with the focus in the reason; Esc gives it back to the button.
    const restore = row.getByRole("button", { name: /^Restore the 50 submitted .* \([0-9a-f]{8}\)$/ });
    await restore.focus();
    await ops.keyboard.press("Enter");
    const dialog = ops.getByRole("dialog", { name: `Restore submission ${sessions.alice50.slice(0, 8)}…` });
    await dialog.waitFor();
    assert.match(
      await dialog.textContent(),
      /Restore the 50 that alice submitted on global \(season 1\): it is no longer voided, it counts again, and their score on global is recomputed with it\./,
    );
    assert.doesNotMatch(await dialog.textContent(), /cannot be undone/);
    const reason = dialog.getByLabel(/^Reason/);
    assert.ok(await reason.evaluate((el) => el === document.activeElement), "the reason field has the focus");
    await ops.keyboard.press("Escape");
    await waitFor("closed", async () => !(await dialog.isVisible()));
    assert.ok(await restore.evaluate((el) => el === document.activeElement), "the focus went back to the Restore button");

    // No reason: refused before anything is sent.
    await ops.keyboard.press("Enter");
    await dialog.waitFor();
    await dialog.getByRole("button", { name: "Restore submission" }).click();
    await waitFor("reason required", async () => /required/.test(await text(ops, "[data-testid=reason-error]")));
    assert.equal(await reason.getAttribute("aria-invalid"), "true");
    assert.notEqual((await api(server, adminKey, "GET", "/api/audit?limit=1")).body.entries[0].action, "restore", "nothing was sent");

    await reason.fill("voided by mistake: the run was checked (ticket #4712)");
    await reason.press("Enter");
    await waitFor("outcome", async () =>
      /^Restored submission [0-9a-f]{8}: alice's score on global is now 150\.$/.test(await text(ops, "[data-testid=op-outcome]")),
    );
    assert.equal(await dialog.isVisible(), false, "the dialog closed");
    assert.ok(await ops.locator("[data-testid=op-outcome]").evaluate((el) => el === document.activeElement), "focus on the outcome");

    // The public board, in another browser context, gets it over its WebSocket: alice first with 150 again.
    await waitFor(
      "public board: alice 150 first",
      async () => (await boardRows(board)).map((r) => `${r.rank}:${r.user}:${r.score}`).join() === "1:alice:150,2:bob:120",
      { timeoutMs: 3000, intervalMs: 25 },
    );
    // The operator's view is read again: rank 1, the submission counts (not voided, Void on it again).
    await waitFor("alice rank 1", async () => (await text(ops, "[data-testid=op-rank]")) === "1");
    assert.equal(await text(ops, "[data-testid=op-score]"), "150");
    await waitFor("row not voided", async () => (await row.getAttribute("class")) === null);
    assert.equal(await row.locator(".state-voided").count(), 0);
    assert.equal(await row.getByRole("button", { name: /^Restore/ }).count(), 0);
    assert.equal(await row.getByRole("button", { name: /^Void the 50/ }).count(), 1);

    // The audit log: the restore first, in words like a void, with a badge of its own (the colour of an unban).
    const first = ops.locator("[data-testid=audit-entry]").first();
    await waitFor("audit: restore", async () => (await first.getAttribute("data-action")) === "restore");
    const what = `restored submission ${sessions.alice50.slice(0, 8)} of alice on global — score now 150`;
    assert.equal(await text(ops, "[data-testid=audit-entry]:first-child .audit-what"), what);
    assert.match(await first.textContent(), /“voided by mistake: the run was checked \(ticket #4712\)” — ops-e2e/);
    assert.equal(await text(ops, "[data-testid=audit-entry]:first-child .tag"), "Restore");
    const colours = await ops.evaluate(() => {
      const probe = (cls) => {
        const el = document.createElement("span");
        el.className = `tag ${cls}`;
        document.body.append(el);
        const c = getComputedStyle(el).color;
        el.remove();
        return c;
      };
      const tag = document.querySelector("[data-testid=audit-entry]:first-child .tag");
      return { restore: tag ? getComputedStyle(tag).color : null, unban: probe("tag-unban"), void: probe("tag-void") };
    });
    assert.equal(colours.restore, colours.unban, "a restore is shown like an unban");
    assert.notEqual(colours.restore, colours.void, "not like a void");
    const audit = await api(server, adminKey, "GET", "/api/audit?limit=1");
    assert.deepEqual(
      [audit.body.entries[0].action, audit.body.entries[0].session_id, audit.body.entries[0].detail.boards],
      ["restore", sessions.alice50, { global: 150 }],
      "the page shows what the API has",
    );
  });

  test("a restore refused because another operator restored it first (409 not_voided) shows what is true now", async () => {
    // carol's only submission was voided (she has no entry).
    await ops.locator("form[role=search] input").fill("carol");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("carol: no entry", async () => (await text(ops, "[data-testid=op-rank]")) === "No entry");
    const row = ops.locator(`[data-testid=submission][data-session="${sessions.carol}"]`);
    await row.getByRole("button", { name: /^Restore/ }).waitFor();
    const other = await api(server, adminKey, "POST", "/api/leaderboard/restore", { session_id: sessions.carol, reason: "other operator" });
    assert.equal(other.status, 200);
    assert.equal(other.body.score, 90);
    await row.getByRole("button", { name: /^Restore/ }).click();
    const dialog = ops.getByRole("dialog", { name: /^Restore submission/ });
    await dialog.getByLabel(/^Reason/).fill("appeal upheld");
    await dialog.getByRole("button", { name: "Restore submission" }).click();
    await dialog.locator("[data-testid=action-error]").waitFor();
    assert.equal(await text(ops, "[data-testid=action-error]"), "Refused: this submission is not voided (409 not_voided)");
    assert.equal(await dialog.getByLabel(/^Reason/).inputValue(), "appeal upheld", "the reason is kept");
    assert.ok(await dialog.getByLabel(/^Reason/).evaluate((el) => el === document.activeElement), "the focus is back in the reason");
    // Behind the dialog the view was read again: carol's submission counts, rank 3. Esc closes the dialog.
    await waitFor("carol's row not voided", async () => (await row.getAttribute("class")) === null);
    await waitFor("carol rank 3", async () => (await text(ops, "[data-testid=op-rank]")) === "3");
    await ops.keyboard.press("Escape");
    await waitFor("dialog closed", async () => !(await dialog.isVisible()));
    assert.equal(await row.getByRole("button", { name: /^Void/ }).count(), 1);
    await waitFor("public board with carol", async () => (await boardRows(board)).map((r) => `${r.user}:${r.score}`).join() === "alice:150,bob:120,carol:90", {
      timeoutMs: 3000,
    });
    // Only the other operator's restore is in the log.
    const audit = await api(server, adminKey, "GET", "/api/audit?limit=2");
    assert.deepEqual(audit.body.entries.map((e) => [e.action, e.reason]), [["restore", "other operator"], ["restore", "voided by mistake: the run was checked (ticket #4712)"]]);
  });

  test("phone width: no horizontal scrolling, the dialog fits", async () => {
    await ops.setViewportSize({ width: 375, height: 740 });
    await ops.locator("form[role=search] input").fill("spammer");
    await ops.locator("form[role=search] input").press("Enter");
    await waitFor("spammer's submissions", async () => (await ops.locator("[data-testid=submission]").count()) >= 20);
    const overflow = await ops.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `horizontal overflow ${overflow}px`);
    await ops.getByRole("button", { name: "Ban player…" }).click();
    const dialog = ops.getByRole("dialog");
    await dialog.waitFor();
    await dialog.getByLabel(/^Reason/).fill("spam bot");
    await ops.screenshot({ path: join(REPO, "docs", "img", "admin-phone.png") });
    const box = await dialog.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 375 && box.y >= 0 && box.y + box.height <= 740, `dialog at ${JSON.stringify(box)}`);
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await ops.setViewportSize({ width: 1280, height: 900 });
  });

  test("a reload keeps the key for this tab; “Forget key” removes it", async () => {
    await ops.reload();
    await ops.getByRole("heading", { name: "Find a player" }).waitFor();
    await waitFor("spammer again (from the address bar)", async () => (await ops.locator("form[role=search] input").inputValue()) === "spammer");
    await ops.getByRole("button", { name: "Forget key" }).click();
    await ops.getByLabel("Admin API key").waitFor();
    assert.equal(await ops.evaluate(() => sessionStorage.getItem("leaderboard.adminKey")), null);
    assert.equal(await ops.evaluate(() => localStorage.length), 0);
    await ops.reload();
    await ops.getByLabel("Admin API key").waitFor();
    assert.deepEqual(errors, [], "no page errors");
  });
});
