// The web app in a real headless Chromium: /client1/ (alice) and /client2/ (bob) talk through
// a real `banter serve`. Run with `npm test` from this folder after `cargo build`.
//
// Environment: BANTER_BIN (default ../../target/debug/banter), CHROMIUM (default
// /usr/bin/chromium), BANTER_SCREENSHOT (a path: save the README screenshot there).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const here = fileURLToPath(new URL(".", import.meta.url));
const BANTER = resolve(process.env.BANTER_BIN ?? join(here, "../../target/debug/banter"));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
];
const XSS = "<img src=x onerror=alert(1)>";

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

function startBanter(port, database, extra = []) {
  return new Promise((ok, fail) => {
    // Posting limits are not under test here; lifting them keeps the paging setup quick.
    const args = ["serve", "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${database}`, "--rate-limit", "off", ...extra];
    const child = spawn(BANTER, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, BANTER_LOG: "warn,banter=info" },
    });
    let log = "";
    const timer = setTimeout(() => fail(new Error(`banter did not start:\n${log}`)), 15000);
    child.stderr.on("data", (chunk) => {
      log += chunk;
      if (log.includes("listening on http://")) {
        clearTimeout(timer);
        ok(child);
      }
    });
    child.on("exit", (code) => fail(new Error(`banter exited with ${code}:\n${log}`)));
  });
}

function stopBanter(child) {
  return new Promise((ok) => {
    child.removeAllListeners("exit");
    child.on("exit", (code) => ok(code));
    child.kill("SIGTERM");
  });
}

async function step(name, fn) {
  const started = Date.now();
  await fn();
  console.log(`ok - ${name} (${Date.now() - started} ms)`);
}

const dir = mkdtempSync(join(tmpdir(), "banter-browser-"));
const database = join(dir, "banter.db");
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let server = await startBanter(port, database);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS, headless: true });
const dialogs = [];

async function openClient(path) {
  const context = await browser.newContext({ viewport: { width: 560, height: 720 } });
  const page = await context.newPage();
  page.on("dialog", async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.dismiss();
  });
  page.on("pageerror", (error) => {
    throw new Error(`${path}: page error: ${error.message}`);
  });
  await page.goto(`${base}${path}`);
  await page.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
  return page;
}

const bubbles = (page) => page.locator("#messages li.message:not(.pending) .bubble");
const seqsOf = (page) =>
  page.$$eval("#messages li[data-seq]", (items) => items.map((li) => Number(li.dataset.seq)));

try {
  const alice = await openClient("/client1/");
  const aliceSockets = [];
  alice.on("websocket", (ws) => aliceSockets.push(ws.url()));
  const bob = await openClient("/client2/");

  await step("both names are in the online list", async () => {
    for (const page of [alice, bob]) {
      await page.locator("#online li", { hasText: "alice" }).waitFor();
      await page.locator("#online li", { hasText: "bob" }).waitFor();
      assert.equal(await page.locator("#online-count").textContent(), "2");
    }
    assert.equal(await alice.locator("#me").textContent(), "as alice");
    assert.equal(await bob.locator("#me").textContent(), "as bob");
  });

  await step("the typing indicator shows on the other side only", async () => {
    await alice.locator("#input").pressSequentially("Hello bob", { delay: 20 });
    await bob.locator("#typing", { hasText: "alice is typing…" }).waitFor({ timeout: 15000 });
    assert.equal(await alice.locator("#typing").textContent(), "");
  });

  await step("a message typed in one page appears in the other", async () => {
    await alice.locator("#input").press("Enter");
    await bob.locator("#messages .bubble", { hasText: "Hello bob" }).waitFor({ timeout: 15000 });
    await alice.locator("#messages li.message.mine .bubble", { hasText: "Hello bob" }).waitFor();
    // Posting ended the indicator. Expiry would take 6 s from the last keystroke, so a wait
    // shorter than that shows it was the post.
    await bob.locator("#typing", { hasText: /^$/ }).waitFor({ timeout: 3000 });
    assert.equal(await alice.locator("#input").inputValue(), "");
  });

  await step("arrivals are read out from a role=log; the list itself is not a live region", async () => {
    for (const page of [alice, bob]) {
      assert.equal(await page.locator("[role=log]").count(), 1);
      assert.equal(await page.locator("[aria-live]", { has: page.locator("li.message") }).count(), 0,
        "no live region holds the message list (history loads would be read out)");
      assert.equal(await page.locator("#messages").getAttribute("aria-live"), null);
      assert.equal(await page.locator("#messages").getAttribute("role"), null);
    }
    const log = bob.locator("[role=log]");
    assert.equal(await log.textContent(), "alice: Hello bob", "bob hears alice's message, and only that");
    assert.equal(await alice.locator("[role=log]").textContent(), "", "alice is not read her own message");
  });

  await step("Shift+Enter makes a new line, Enter sends", async () => {
    await bob.locator("#input").pressSequentially("line one");
    await bob.locator("#input").press("Shift+Enter");
    await bob.locator("#input").pressSequentially("line two");
    await bob.locator("#input").press("Enter");
    const last = alice.locator("#messages .bubble", { hasText: "line one" });
    await last.waitFor({ timeout: 15000 });
    assert.equal(await last.textContent(), "line one\nline two");
  });

  await step("markup arrives as text and no script runs", async () => {
    await bob.locator("#input").fill(XSS);
    await bob.locator("#input").press("Enter");
    const shown = alice.locator("#messages .bubble", { hasText: "onerror" });
    await shown.waitFor({ timeout: 15000 });
    assert.equal(await shown.textContent(), XSS);
    assert.equal(await alice.locator("#messages img").count(), 0, "no <img> element was created");
    assert.equal(await bob.locator("#messages img").count(), 0);
    await alice.waitForTimeout(300);
    assert.deepEqual(dialogs, [], "no alert() ran");
  });

  // The server counts Unicode scalar values; `maxlength` counts UTF-16 units, two per emoji.
  const codePoints = (text) => [...text].length;

  await step("an emoji message at the server's 4000-character limit goes through whole", async () => {
    const atLimit = "👍".repeat(4000);
    await alice.locator("#input").fill(atLimit);
    assert.equal(codePoints(await alice.locator("#input").inputValue()), 4000, "the composer took all 4000");
    await alice.locator("#input").press("Enter");
    const shown = bob.locator("#messages li[data-seq] .bubble", { hasText: "👍👍👍" });
    await shown.waitFor({ timeout: 15000 });
    assert.equal(await shown.textContent(), atLimit);
    // One more is cut at the limit (the server would refuse it), and the writer is told.
    await alice.locator("#input").fill(`${atLimit}👍`);
    assert.equal(codePoints(await alice.locator("#input").inputValue()), 4000);
    await alice.locator("#notice", { hasText: "at most 4000 characters" }).waitFor({ timeout: 3000 });
    await alice.locator("#input").fill("");
  });

  await step("the phone drawer: inert when closed, Escape closes it, focus returns to its button", async () => {
    const people = alice.locator("#people");
    const toggle = alice.locator("#toggle-people");
    const focusedId = () => alice.evaluate(() => document.activeElement?.id ?? "");
    assert.equal(await people.evaluate((p) => p.inert), true, "closed at phone width: inert");
    assert.equal(await toggle.getAttribute("aria-expanded"), "false");
    await people.evaluate((p) => p.focus());
    assert.notEqual(await focusedId(), "people", "a closed drawer cannot take focus");
    await toggle.click();
    assert.equal(await people.evaluate((p) => p.inert), false);
    assert.equal(await toggle.getAttribute("aria-expanded"), "true");
    assert.equal(await focusedId(), "people", "opening moves focus into the drawer");
    await alice.keyboard.press("Escape");
    assert.equal(await people.evaluate((p) => p.inert), true);
    assert.equal(await toggle.getAttribute("aria-expanded"), "false");
    assert.equal(await focusedId(), "toggle-people", "focus is back on the button that opened it");
  });

  await step("names of any script: an Indic name with vowel signs joins, 32 characters fit", async () => {
    const page = await (await browser.newContext({ viewport: { width: 560, height: 720 } })).newPage();
    await page.goto(`${base}/?room=indic`);
    const name = page.locator("#lobby-username");
    const valid = () => name.evaluate((input) => input.validity.valid);
    // Astral letters are two UTF-16 units each: 32 of them are 64 units, and the 33rd is cut.
    await name.fill("𝒜".repeat(33));
    assert.equal(codePoints(await name.inputValue()), 32);
    assert.equal(await valid(), true, "32 letters are a valid name");
    await name.fill("no spaces!");
    assert.equal(await valid(), false, "the pattern still refuses what the server refuses");
    await name.fill("सीमा"); // स ी म ा: the vowel signs are marks (Mc), not letters (L)
    assert.equal(await valid(), true, "the browser accepts what the server accepts");
    await page.locator("#lobby-form button").click();
    await page.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
    assert.equal(await page.locator("#me").textContent(), "as सीमा");
    await page.locator("#online li", { hasText: "सीमा" }).waitFor();
    await page.context().close();
  });

  // Older history comes over REST in two ways: scrolling up to the top of the timeline, and the
  // "Load older messages" button for when nothing overflows (so nothing can be scrolled).
  async function postOld(room, count) {
    for (let i = 1; i <= count; i += 1) {
      const post = await fetch(`${base}/api/rooms/${room}/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "carol", content: `old ${i}` }),
      });
      assert.equal(post.status, 201);
    }
  }

  async function openRoom(room, viewport) {
    const page = await (await browser.newContext({ viewport })).newPage();
    await page.goto(`${base}/?room=${room}`);
    await page.locator("#lobby-username").fill("dave");
    await page.locator("#lobby-form button").click();
    await page.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
    assert.equal(await bubbles(page).count(), 50, "the welcome carries the latest 50");
    await page.locator("#load-older").waitFor({ state: "visible" });
    return page;
  }

  async function expectWholeHistory(page) {
    await page.locator("#history-start").waitFor({ state: "visible", timeout: 15000 });
    assert.equal(await page.locator("#load-older").isHidden(), true, "nothing older is offered");
    assert.equal(await bubbles(page).count(), 60);
    const seqs = await seqsOf(page);
    assert.deepEqual(seqs, Array.from({ length: 60 }, (_, i) => i + 1), "in order, once each");
    assert.equal(await bubbles(page).first().textContent(), "old 1");
    assert.equal(await page.locator("[role=log] *").count(), 0, "history, old or loaded, is not read out");
  }

  await step("scrolling up to the top loads older history over REST", async () => {
    await postOld("paging", 60);
    const page = await openRoom("paging", { width: 560, height: 720 });
    const timeline = page.locator("#timeline");
    const box = await timeline.boundingBox();
    assert.ok(box, "the timeline is on screen");
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    // Wheel up until the page says it holds the whole room; each wheel is a real scroll event.
    for (let turn = 0; turn < 50 && (await page.locator("#history-start").isHidden()); turn += 1) {
      await page.mouse.wheel(0, -2000);
      await page.waitForTimeout(100);
    }
    await expectWholeHistory(page);
    await page.context().close();
  });

  await step("the Load older button loads older history when nothing can scroll", async () => {
    await postOld("paging-button", 60);
    const page = await openRoom("paging-button", { width: 1200, height: 6000 });
    const overflows = await page.$eval("#timeline", (t) => t.scrollHeight > t.clientHeight);
    assert.equal(overflows, false, "the 50 messages of the welcome fit, so no scroll event can load more");
    assert.equal(await page.locator("#people").evaluate((p) => p.inert), false, "wide: the list is a column, not a drawer");
    await page.locator("#load-older").click();
    await expectWholeHistory(page);
    await page.context().close();
  });

  await step("a server restart: reconnect, resume with after, resend unsent messages once", async () => {
    const before = await seqsOf(bob);
    assert.equal(await stopBanter(server), 0, "graceful shutdown exits 0");
    await alice.locator("#status:not([data-state=online])").waitFor({ timeout: 15000 });
    // Typed while the server is down: kept and marked pending.
    await alice.locator("#input").fill("sent while offline");
    await alice.locator("#input").press("Enter");
    await alice.locator("#messages li.pending", { hasText: "sent while offline" }).waitFor();
    server = await startBanter(port, database);
    // Someone else posts while the pages are still reconnecting.
    const post = await fetch(`${base}/api/rooms/general/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "carol", content: "posted during the restart", client_id: "carol-1" }),
    });
    assert.equal(post.status, 201);
    // An edit made while the pages are away: the resume's `rev` brings it.
    const helloSeq = await alice.locator("#messages li[data-seq]", { hasText: "Hello bob" }).getAttribute("data-seq");
    const patch = await fetch(`${base}/api/rooms/general/messages/${helloSeq}`, {
      method: "PATCH",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "alice", content: "Hello bob, edited while away" }),
    });
    assert.equal(patch.status, 200);
    for (const page of [alice, bob]) {
      await page.locator("#status[data-state=online]").waitFor({ timeout: 60000 });
      await page.locator(`#messages li[data-seq="${helloSeq}"] .bubble`, { hasText: "Hello bob, edited while away" }).waitFor({ timeout: 10000 });
      await page.locator(`#messages li[data-seq="${helloSeq}"] .edited`, { hasText: "(edited)" }).waitFor();
      await page.locator("#messages li[data-seq] .bubble", { hasText: "sent while offline" }).waitFor({ timeout: 10000 });
      await page.locator("#messages .bubble", { hasText: "posted during the restart" }).waitFor({ timeout: 10000 });
    }
    assert.equal(await alice.locator("#messages li.pending").count(), 0, "the outbox emptied");
    const resumed = aliceSockets[aliceSockets.length - 1];
    assert.match(resumed, /[?&]after=\d+/, resumed);
    assert.match(resumed, /[?&]rev=\d+/, "the resume passes the last rev seen");
    for (const page of [alice, bob]) {
      const seqs = await seqsOf(page);
      const expected = Array.from({ length: seqs.length }, (_, i) => i + 1);
      assert.deepEqual(seqs, expected, "no gap, no double");
      assert.equal(seqs.length, before.length + 2);
      assert.equal(await page.locator("#messages .bubble", { hasText: "sent while offline" }).count(), 1);
    }
  });

  await step("Chromium's WebSockets negotiated permessage-deflate and read compressed frames", async () => {
    // Both tabs reconnected to the restarted server above, so its counters see only them.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const deflated = Number(/^banter_ws_deflate_connections_total (\d+)/m.exec(metrics)?.[1] ?? 0);
    assert.ok(deflated >= 2, `deflate connections: ${deflated}`);
    // A message long enough to be sent compressed both ways still arrives whole.
    const text = "compressed both ways: " + "the quick brown fox jumps over the lazy dog ".repeat(4);
    await alice.locator("#input").fill(text);
    await alice.locator("#input").press("Enter");
    await bob.locator("#messages li[data-seq] .bubble", { hasText: "compressed both ways:" }).waitFor({ timeout: 15000 });
    // Up arrow edits the last *stored* message: wait until alice's own copy is acknowledged
    // (it has its seq), or the next step would race the server's reply.
    await alice.locator("#messages li.mine[data-seq] .bubble", { hasText: "compressed both ways:" }).waitFor({ timeout: 15000 });
  });

  await step("Up arrow in an empty composer edits your last message; the other side sees (edited)", async () => {
    await alice.locator("#input").fill("");
    await alice.locator("#input").press("ArrowUp");
    assert.match(await alice.locator("#input").inputValue(), /^compressed both ways:/, "the last message is in the composer");
    assert.equal(await alice.locator("#editing").isVisible(), true);
    await alice.locator("#input").fill("fixed my typo");
    await alice.locator("#input").press("Enter");
    const shown = bob.locator("#messages li[data-seq]", { hasText: "fixed my typo" });
    await shown.waitFor({ timeout: 15000 });
    assert.equal(await shown.locator(".edited").textContent(), "(edited)");
    assert.equal(await bob.locator("#messages li[data-seq]", { hasText: "compressed both ways:" }).count(), 0);
    await alice.locator("#messages li.mine[data-seq] .bubble", { hasText: "fixed my typo" }).waitFor();
    assert.equal(await alice.locator("#editing").isHidden(), true);
    assert.equal(await alice.locator("#input").inputValue(), "");
  });

  await step("the message menu, by keyboard: delete; the other side sees \"message deleted\"", async () => {
    const mine = alice.locator("#messages li.mine[data-seq]", { hasText: "fixed my typo" });
    const seq = await mine.getAttribute("data-seq");
    assert.equal(await bob.locator(`#messages li[data-seq="${seq}"] .actions`).count(), 0, "no menu on someone else's message");
    await mine.locator(".actions").focus();
    await alice.keyboard.press("Enter");
    assert.equal(await mine.locator(".actions").getAttribute("aria-expanded"), "true");
    assert.equal(await alice.evaluate(() => document.activeElement?.textContent), "Edit", "focus moves into the menu");
    await alice.keyboard.press("ArrowDown");
    assert.equal(await alice.evaluate(() => document.activeElement?.textContent), "Delete");
    await alice.keyboard.press("Enter");
    for (const page of [alice, bob]) {
      const gone = page.locator(`#messages li.deleted[data-seq="${seq}"] .bubble`);
      await gone.waitFor({ timeout: 15000 });
      assert.equal(await gone.textContent(), "message deleted");
    }
    assert.equal(await alice.locator(`#messages li[data-seq="${seq}"] .actions`).count(), 0, "a deleted message has no menu");
    // Up arrow now skips the deleted message.
    await alice.locator("#input").press("ArrowUp");
    assert.equal(await alice.locator("#input").inputValue(), "sent while offline");
    await alice.locator("#input").press("Escape");
    assert.equal(await alice.locator("#input").inputValue(), "");
    assert.equal(await alice.locator("#editing").isHidden(), true);
  });

  async function carolPosts(room, content) {
    const post = await fetch(`${base}/api/rooms/${room}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "carol", content }),
    });
    assert.equal(post.status, 201);
  }

  await step("search finds a message, highlights the words, and jumps to it in the history", async () => {
    const input = alice.locator("#search-input");
    const hits = alice.locator("#search-list .hit");
    const searchFor = async (q) => {
      await input.fill(q);
      await input.press("Enter");
      // Busy from the submit until the answer is shown.
      await alice.locator("#search-results[aria-busy=false]").waitFor({ timeout: 10000 });
    };
    // This room by default. The deleted message is found by none of its words.
    assert.equal(await alice.locator("#search-all").isChecked(), false);
    await searchFor("typo");
    assert.equal(await alice.locator("#search-status").textContent(), "No messages found");
    assert.equal(await hits.count(), 0);
    await alice.keyboard.press("Escape");
    assert.equal(await alice.locator("#search-results").isHidden(), true, "Escape closes the results");
    assert.equal(await alice.evaluate(() => document.activeElement?.id), "search-input");
    // An edited message is found by its new text; the match is marked in the content's own case.
    await searchFor("AWAY");
    assert.equal(await hits.count(), 1);
    assert.equal(await hits.locator("mark").textContent(), "away");
    assert.equal(await hits.locator(".text").textContent(), "Hello bob, edited while away");
    // Markup in a result is text too.
    await searchFor("onerror");
    assert.equal(await hits.locator(".text").textContent(), XSS);
    assert.equal(await alice.locator("#search-results img").count(), 0);
    // A query with no word is refused; the server's reason is shown.
    await searchFor("!!!");
    assert.equal(await alice.locator("#search-status.error").isVisible(), true);
    assert.equal(await hits.count(), 0);
    // Every room: a message in another room, older than its welcome's 50.
    await carolPosts("archive", "Remember the Quokka picnic on Friday");
    await postOld("archive", 60);
    await alice.locator("#search-all").check();
    await searchFor("quokka");
    assert.equal(await hits.count(), 1);
    assert.equal(await hits.locator("mark").textContent(), "Quokka");
    assert.equal(await hits.locator(".in-room").textContent(), "#archive");
    await hits.click();
    await alice.locator("#room-name", { hasText: "#archive" }).waitFor({ timeout: 10000 });
    await alice.locator('#messages li[data-seq="1"].found').waitFor({ timeout: 15000 });
    const found = alice.locator('#messages li[data-seq="1"]');
    const inView = await found.evaluate((li) => {
      const box = li.getBoundingClientRect();
      const view = document.getElementById("timeline").getBoundingClientRect();
      return box.top >= view.top && box.bottom <= view.bottom;
    });
    assert.ok(inView, "the message is scrolled into view");
    assert.equal(await found.locator(".bubble").textContent(), "Remember the Quokka picnic on Friday");
    assert.equal(await alice.locator("#search-results").isHidden(), true);
    assert.deepEqual(await seqsOf(alice), Array.from({ length: 61 }, (_, i) => i + 1), "older pages loaded in order, once each");
    assert.equal(await alice.evaluate(() => document.activeElement?.dataset.seq), "1", "focus is on the message");
    // By keyboard, back to #general: ArrowDown into the results, Enter on one.
    await searchFor("away");
    const seq = await hits.first().getAttribute("data-seq");
    await input.press("ArrowDown");
    await alice.keyboard.press("Enter");
    await alice.locator("#room-name", { hasText: "#general" }).waitFor({ timeout: 10000 });
    await alice.locator(`#messages li[data-seq="${seq}"].found`).waitFor({ timeout: 15000 });
    await alice.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
  });

  await step("the room list: an unread badge for new messages elsewhere; entering shows the divider and clears it", async () => {
    // bob has read #side up to its first message; carol then posts two more.
    await carolPosts("side", "side first");
    const put = await fetch(`${base}/api/users/bob/rooms/side/read`, {
      method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ seq: 1 }),
    });
    assert.equal(put.status, 200);
    await carolPosts("side", "side second");
    await carolPosts("side", "side third");
    const side = bob.locator('#rooms button[data-room="side"]');
    await side.locator(".badge").waitFor({ timeout: 20000 });
    assert.equal(await side.locator(".badge").textContent(), "2");
    assert.equal(await side.locator(".badge").getAttribute("aria-label"), "2 unread");
    assert.equal(await bob.locator("#unread-total").textContent(), "2", "the drawer's button shows it at phone width");
    assert.equal(await bob.locator('#rooms button[data-room="general"]').getAttribute("aria-current"), "page");
    // At phone width the list is in the drawer.
    await bob.locator("#toggle-people").click();
    await side.click();
    await bob.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
    assert.equal(await bob.locator("#room-name").textContent(), "#side");
    assert.equal(await bob.locator("#messages .divider").count(), 1);
    assert.equal(await bob.locator("#messages .divider + li.message .bubble").textContent(), "side second",
      "the divider is at the first unread message");
    assert.equal(await side.getAttribute("aria-current"), "page");
    assert.equal(await side.locator(".badge").count(), 0, "no badge on the room being read");
    assert.equal(await bob.locator("#unread-total").isHidden(), true);
    // The page reported what it showed: the server's count is 0 too.
    let unread = -1;
    for (let i = 0; i < 50 && unread !== 0; i += 1) {
      const list = await (await fetch(`${base}/api/users/bob/rooms`)).json();
      unread = list.rooms.find((r) => r.room === "side")?.unread;
      if (unread !== 0) await bob.waitForTimeout(100);
    }
    assert.equal(unread, 0, "the read position was stored");
    // And back.
    await bob.locator("#toggle-people").click();
    await bob.locator('#rooms button[data-room="general"]').click();
    await bob.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
    assert.equal(await bob.locator("#room-name").textContent(), "#general");
    assert.equal(await bob.locator("#messages .divider").count(), 0, "nothing new in #general");
  });

  await step("auth jwt: the app takes a token, creates a private room, adds someone; outsiders get a clear 404; removal (4403) does not reconnect", async () => {
    const secret = "browser-test-secret";
    const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const token = (sub) => {
      const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
      return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
    };
    const jwtPort = await freePort();
    const jwtBase = `http://127.0.0.1:${jwtPort}`;
    const jwtServer = await startBanter(jwtPort, join(dir, "jwt.db"), ["--auth", "jwt", "--jwt-secret", secret]);
    const contexts = [];
    const open = async (path, expectOnline = true) => {
      const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });
      contexts.push(context);
      const page = await context.newPage();
      page.on("pageerror", (error) => { throw new Error(`${path}: page error: ${error.message}`); });
      await page.goto(`${jwtBase}${path}`);
      if (expectOnline) await page.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
      return page;
    };
    try {
      // Without a token the server refuses the handshake (401): the app says it needs one.
      const anon = await open("/?room=hall", false);
      await anon.locator("#lobby-username").fill("nobody");
      await anon.locator("#lobby-form button").click();
      await anon.locator("#lobby-error", { hasText: "requires sign-in" }).waitFor({ timeout: 10000 });
      // The token in the lobby: the name follows it.
      await anon.locator("#lobby-token").fill(token("ann"));
      assert.equal(await anon.locator("#lobby-username").inputValue(), "ann");
      await anon.locator("#lobby-form button").click();
      await anon.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
      assert.equal(await anon.locator("#me").textContent(), "as ann");
      const ann = anon;
      // Create a private room from the room list.
      await ann.locator("#new-room").fill("team");
      await ann.locator("#new-room-form button").click();
      await ann.locator("#room-name", { hasText: "#team" }).waitFor({ timeout: 10000 });
      await ann.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
      await ann.locator("#room-private").waitFor({ state: "visible", timeout: 10000 });
      await ann.locator("#members li", { hasText: "ann" }).waitFor();
      // Add ben.
      await ann.locator("#add-member").fill("ben");
      await ann.locator("#add-member-form button").click();
      await ann.locator("#members li", { hasText: "ben" }).waitFor({ timeout: 10000 });
      assert.equal(await ann.locator("#members-status").textContent(), "ben was added to #team.");
      // ben, a member, comes in with a token in the address and talks.
      const ben = await open(`/?room=team&token=${token("ben")}`);
      assert.equal(await ben.locator("#me").textContent(), "as ben");
      await ben.locator("#members li", { hasText: "ann" }).waitFor({ timeout: 10000 });
      await ben.locator("#input").fill("hello team");
      await ben.locator("#input").press("Enter");
      await ann.locator("#messages li[data-seq] .bubble", { hasText: "hello team" }).waitFor({ timeout: 10000 });
      // cat is not a member: for her the room does not exist.
      const cat = await open(`/?room=team&token=${token("cat")}`, false);
      await cat.locator("#lobby-error", { hasText: "Room #team was not found" }).waitFor({ timeout: 10000 });
      assert.equal(await cat.locator("#chat").isHidden(), true);
      // ann removes ben: his page says so and does not reconnect.
      const sockets = [];
      ben.on("websocket", (ws) => sockets.push(ws.url()));
      const removed = await fetch(`${jwtBase}/api/rooms/team/members/ben`, {
        method: "DELETE", headers: { authorization: `Bearer ${token("ann")}` },
      });
      assert.equal(removed.status, 200);
      await ben.locator("#notice", { hasText: "You were removed from this room." }).waitFor({ timeout: 10000 });
      assert.equal(await ben.locator("#status").textContent(), "removed");
      assert.equal(await ben.locator("#input").isDisabled(), true);
      await ben.waitForTimeout(2500);
      assert.deepEqual(sockets, [], "no reconnect after 4403");
      assert.equal(await ben.locator("#notice").isVisible(), true, "the notice stays");
    } finally {
      for (const context of contexts) await context.close();
      await stopBanter(jwtServer);
    }
  });

  if (process.env.BANTER_SCREENSHOT) {
    await step("screenshot for the README", async () => {
      // Something new in two other rooms of bob's, for the room list's badges.
      await carolPosts("side", "are we still on for friday?");
      await carolPosts("release", "release notes draft is up");
      const put = await fetch(`${base}/api/users/bob/rooms/release/read`, {
        method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify({ seq: 1 }),
      });
      assert.equal(put.status, 200);
      for (const text of ["changelog reviewed", "tagging v1.4 now", "binaries are building"]) await carolPosts("release", text);
      // A short conversation in a room of its own, one message edited.
      const say = async (username, content) => {
        const post = await fetch(`${base}/api/rooms/design/messages`, {
          method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ username, content }),
        });
        assert.equal(post.status, 201);
        return (await post.json()).seq;
      };
      await say("carol", "Morning! The room list is live: every room you're in, newest first");
      await say("bob", "with unread badges, nice");
      const typo = await say("alice", "And edits: press ↑ to fix a tpyo");
      const fix = await fetch(`${base}/api/rooms/design/messages/${typo}`, {
        method: "PATCH", headers: { "content-type": "application/json" },
        body: JSON.stringify({ username: "alice", content: "And edits: press ↑ to fix a typo" }),
      });
      assert.equal(fix.status, 200);
      await say("carol", "Private rooms work with a token too");
      for (const [page, name] of [[bob, "bob"], [alice, "alice"]]) {
        await page.locator("#leave").click();
        await page.locator("#lobby-username").fill(name);
        await page.locator("#lobby-room").fill("design");
        await page.locator("#lobby-form button").click();
        await page.locator("#status[data-state=online]").waitFor({ timeout: 10000 });
      }
      await bob.setViewportSize({ width: 1200, height: 800 });
      await bob.locator('#rooms button[data-room="release"] .badge', { hasText: "3" }).waitFor({ timeout: 20000 });
      await bob.locator('#rooms button[data-room="side"] .badge', { hasText: "1" }).waitFor({ timeout: 20000 });
      await alice.locator("#input").pressSequentially("Shall we ship it?", { delay: 10 });
      await bob.locator("#typing", { hasText: "alice is typing…" }).waitFor({ timeout: 15000 });
      await bob.locator("#timeline").evaluate((t) => { t.scrollTop = t.scrollHeight; });
      await bob.screenshot({ path: resolve(process.env.BANTER_SCREENSHOT) });
    });
  }
  console.log("browser tests passed");
} finally {
  await browser.close();
  await stopBanter(server);
  rmSync(dir, { recursive: true, force: true });
}
