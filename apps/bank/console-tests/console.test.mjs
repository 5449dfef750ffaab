// Browser tests of the Rewind console as `bank serve` mounts it at /console.
//
// playwright-core drives the system's chromium (no browser download) against a real
// `bank serve` on a fresh SQLite file, with a token. The setup makes money move through
// the HTTP API (two accounts, a deposit, a transfer the process manager completes), then
// every view of the console is exercised the way an operator would: streams, the
// causation trail, the live tail, projections (a rebuild), dead letters (a replay) and
// time travel. Each step asserts what the page shows and saves a screenshot.
//
// Environment: BANK_BIN (default: target/debug/bank of the workspace), CHROMIUM
// (default /usr/bin/chromium), SCREENSHOT_DIR (default target/console-tests).
//
// Run: npm test (or .ci/console from the workspace root, which builds the binary first).

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const BANK_BIN = process.env.BANK_BIN || path.join(root, 'target/debug/bank');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || path.join(root, 'target/console-tests');

/** How long one wait for the page (or the server) may take before the step fails. */
const PATIENCE = 20_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `check` until it stops throwing (assertions included), backing off from 25 ms to
 * 250 ms between tries; after `timeout` ms the last error is thrown. This is the
 * expect-style polling the page's asynchronous views need, never a fixed sleep.
 */
async function eventually(check, { timeout = PATIENCE, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let delay = 25;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() >= deadline) {
        error.message = `${what} did not hold within ${timeout} ms: ${error.message}`;
        throw error;
      }
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 250);
  }
}

/** A TCP port nothing listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Microseconds since the epoch of an RFC 3339 time (any number of fraction digits). */
function micros(text) {
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(text);
  assert.ok(match, `not an RFC 3339 time: ${text}`);
  const seconds = Date.parse(match[1] + match[3]);
  assert.ok(!Number.isNaN(seconds), `not an RFC 3339 time: ${text}`);
  const fraction = (match[2] || '').padEnd(6, '0').slice(0, 6);
  return BigInt(seconds) * 1000n + BigInt(fraction);
}

// What the whole run shares: the server, the browser, and the money the setup moved.
const token = 'console-' + randomBytes(12).toString('hex');
let tmp;
let dbPath;
let base;
let server;
let serverLog = '';
let serverOut = '';
let browser;
let page;
let failed = false;
const pageErrors = [];
const dialogs = [];
const bank = {};

async function startServer() {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    serverLog = '';
    serverOut = '';
    const child = spawn(
      BANK_BIN,
      ['serve', '--listen', `127.0.0.1:${port}`, '--database', `sqlite://${dbPath}`, '--token', token],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
    );
    server = child;
    let exited = null;
    child.on('exit', (code, signal) => (exited = { code, signal }));
    child.on('error', (error) => (exited = { error }));
    child.stdout.on('data', (chunk) => (serverOut += chunk));
    child.stderr.on('data', (chunk) => (serverLog += chunk));
    try {
      await eventually(
        async () => {
          if (exited) throw Object.assign(new Error(`bank serve exited: ${JSON.stringify(exited)}`), { exited: true });
          const response = await fetch(`${base}/health`, { signal: AbortSignal.timeout(2_000) });
          assert.equal(response.status, 200, `GET /health: ${response.status}`);
          await response.body?.cancel();
        },
        { timeout: 30_000, what: `GET ${base}/health answering 200` },
      );
      return;
    } catch (error) {
      // Another process may have taken the port between freePort and the bind: try again.
      if (exited && attempt < 3 && /address|in use|bind/i.test(serverLog)) continue;
      throw error;
    }
  }
}

async function stopServer() {
  const child = server;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await gone;
  clearTimeout(timer);
}

// Should node die without running the hooks, the server goes with it.
process.on('exit', () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
});

/** One call of the bank's HTTP API (or the console's), JSON in and out; throws unless 2xx. */
async function api(method, route, body) {
  const response = await fetch(base + route, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${route}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A stream's events as the console's API returns them. */
async function streamEvents(streamId) {
  const { data, next } = await api('GET', `/console/api/streams/${encodeURIComponent(streamId)}?limit=500`);
  assert.equal(next, null);
  return data;
}

/** The text of every cell of every row a locator matches. */
const cells = (locator) => locator.evaluateAll((rows) => rows.map((row) => [...row.cells].map((c) => c.textContent)));

const outcome = () => page.locator('#outcome');

/**
 * Holds the first console API request `matches` picks until `release()` resolves,
 * then lets it through (a slow answer, on cue); returns the undo.
 */
async function holding(matches, release) {
  let held = false;
  const handler = async (route) => {
    if (!held && matches(new URL(route.request().url()))) {
      held = true;
      await release();
    }
    await route.continue();
  };
  await page.route('**/console/api/**', handler);
  return () => page.unroute('**/console/api/**', handler);
}

async function openTab(view) {
  await page.locator(`nav button[data-view="${view}"]`).click();
  await page.locator(`section#${view}`).waitFor({ state: 'visible' });
  assert.equal(await page.locator(`nav button[data-view="${view}"]`).getAttribute('aria-selected'), 'true');
}

async function screenshot(name) {
  await page.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

/** A test step: on failure, a screenshot of the page as it was, and the run is marked failed. */
function step(name, body) {
  it(name, { timeout: 90_000 }, async () => {
    try {
      await body();
    } catch (error) {
      failed = true;
      if (page) await screenshot(`failed-${name.replace(/\W+/g, '-')}.png`).catch(() => {});
      throw error;
    }
  });
}

describe('the console of bank serve, in chromium', { concurrency: false }, () => {
  before(async () => {
    try {
      assert.ok(fs.existsSync(BANK_BIN), `no bank binary at ${BANK_BIN} (set BANK_BIN, or cargo build -p bank --bin bank)`);
      fs.mkdirSync(SHOTS, { recursive: true });
      tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bank-console-'));
      dbPath = path.join(tmp, 'bank.db');
      await startServer();

      // Money moves through the API, as in README.md "Try the bank".
      const open = async (initial_balance) => {
        const { data } = await api('POST', '/api/accounts', { account: { initial_balance } });
        assert.equal(data.current_balance, initial_balance);
        assert.equal(data.status, 'open');
        return data.uuid;
      };
      bank.a = await open(1000);
      bank.b = await open(500);
      bank.streamA = `account-${bank.a}`;
      bank.streamB = `account-${bank.b}`;
      bank.deposit = 42;
      const deposited = await api('POST', `/api/accounts/${bank.a}/deposit`, { deposit_amount: bank.deposit });
      assert.equal(deposited.data.current_balance, 1042);
      bank.amount = 250;
      const transfer = await api('POST', `/api/accounts/${bank.a}/transfer`, {
        transfer_amount: bank.amount,
        destination_account: bank.b,
      });
      bank.transfer = transfer.data.uuid;
      // The process manager withdraws from A and deposits into B after the request returns.
      await eventually(
        async () => {
          assert.equal((await api('GET', `/api/accounts/${bank.b}`)).data.current_balance, 500 + bank.amount);
          assert.equal((await api('GET', `/api/accounts/${bank.a}`)).data.current_balance, 1042 - bank.amount);
          assert.equal((await api('GET', `/api/transfers/${bank.transfer}`)).data.status, 'completed');
        },
        { what: 'the transfer completing' },
      );

      // The event types the bank records, read back rather than guessed.
      bank.eventsA = await streamEvents(bank.streamA);
      assert.deepEqual(
        bank.eventsA.map((e) => e.event_type),
        ['AccountOpened', 'DepositedIntoAccount', 'MoneyTransferRequested', 'WithdrawnFromAccount'],
      );
      bank.eventsB = await streamEvents(bank.streamB);
      assert.deepEqual(bank.eventsB.map((e) => e.event_type), ['AccountOpened', 'DepositedIntoAccount']);

      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu'],
      });
      const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
      page = await context.newPage();
      page.setDefaultTimeout(PATIENCE);
      page.on('pageerror', (error) => pageErrors.push(error));
      page.on('dialog', (dialog) => {
        dialogs.push({ type: dialog.type(), message: dialog.message() });
        dialog.accept();
      });
    } catch (error) {
      failed = true;
      throw error;
    }
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await stopServer();
    if (failed && server) {
      process.stderr.write(`\n--- bank serve (${base}) stdout ---\n${serverOut}\n--- bank serve stderr ---\n${serverLog}\n`);
    }
    if (failed) {
      if (tmp) process.stderr.write(`--- kept ${tmp} (the database) ---\n`);
    } else if (tmp) {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  step('the page takes the token and keeps it for the session', async () => {
    const response = await page.goto(`${base}/console/`);
    assert.equal(response.status(), 200);
    assert.equal(response.headers()['x-frame-options'], 'DENY');
    assert.equal(await page.title(), 'Rewind console');
    // Without the token every read is refused, and the page says so.
    await eventually(async () => assert.equal(await outcome().textContent(), 'the token is missing or wrong'), {
      what: 'the page reporting the missing token',
    });
    await page.locator('#token').fill(token);
    await page.locator('#token').dispatchEvent('change');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('rewind-token')), token);
    // A reload finds it again, and the first listing now succeeds.
    await page.reload();
    assert.equal(await page.locator('#token').inputValue(), token);
    await eventually(async () => assert.match(await outcome().textContent(), /^\d+ streams$/), {
      what: 'the listing with the token',
    });
  });

  step('streams: search by prefix, open a stream, see its events', async () => {
    await openTab('streams');
    const rows = page.locator('#stream-list tr');
    // A search empties the list at once (on the click), then shows what the server found.
    const search = async (prefix, expected) => {
      await page.locator('#prefix').fill(prefix);
      const [request] = await Promise.all([
        page.waitForRequest((r) => new URL(r.url()).pathname === '/console/api/streams'),
        page.locator('#search').click(),
      ]);
      assert.equal(new URL(request.url()).searchParams.get('prefix'), prefix);
      await eventually(async () => assert.deepEqual((await cells(rows)).sort(), expected.sort()), {
        what: `the streams under ${prefix}`,
      });
      assert.equal(await outcome().textContent(), `${expected.length} streams`);
    };
    // A prefix only A's stream has, then every account's.
    const narrow = bank.streamA.slice(0, 'account-'.length + 8);
    assert.ok(!bank.streamB.startsWith(narrow));
    await search(narrow, [[bank.streamA, '4']]);
    await search('account-', [
      [bank.streamA, '4'],
      [bank.streamB, '2'],
    ]);

    await rows.filter({ hasText: bank.streamA }).click();
    await page.locator('#stream-title').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#stream-title').textContent(), bank.streamA);
    const events = page.locator('#stream-events tbody tr');
    await eventually(async () => assert.equal(await events.count(), bank.eventsA.length), { what: "A's events shown" });
    const shown = await cells(events);
    assert.deepEqual(
      shown.map(([version, position, type]) => [version, position, type]),
      bank.eventsA.map((e) => [String(e.stream_version), String(e.position), e.event_type]),
    );
    for (const [i, event] of bank.eventsA.entries()) {
      const details = JSON.parse(await events.nth(i).locator('td').nth(4).locator('pre').textContent());
      assert.equal(details.event_id, event.event_id);
      assert.deepEqual(details.data, event.data);
      assert.deepEqual(details.metadata, event.metadata);
      assert.equal(shown[i][3], event.created_at);
    }
    const deposit = JSON.parse(await events.nth(1).locator('pre').textContent());
    assert.equal(deposit.data.deposit_amount, bank.deposit);
    assert.equal(deposit.data.new_current_balance, 1000 + bank.deposit);
    // Opening a stream also aims the time-travel view at it.
    assert.equal(await page.locator('#past-stream').inputValue(), bank.streamA);
    await screenshot('streams.png');
  });

  step('trail: from the withdrawal to the deposit into B', async () => {
    const [requested, withdrawn] = bank.eventsA.slice(2);
    const [, depositB] = bank.eventsB;
    await page.locator('#stream-events tbody tr').filter({ hasText: 'WithdrawnFromAccount' }).getByRole('button', { name: 'Trail' }).click();
    await page.locator('section#trail').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#trail-event').inputValue(), withdrawn.event_id);
    const steps = page.locator('#trail-steps .step');
    await eventually(
      async () => {
        assert.equal(await page.locator('#trail-title').textContent(), `correlation ${requested.metadata.correlation_id}: 3 commands`);
        assert.equal(await steps.count(), 3);
      },
      { what: 'the trail of the transfer' },
    );
    assert.equal(await outcome().textContent(), `trail of ${withdrawn.event_id}`);
    const headings = await steps.locator('h3').allTextContents();
    const rows = await Promise.all([0, 1, 2].map((i) => cells(steps.nth(i).locator('tr'))));
    const brief = (rowsOfStep) => rowsOfStep.map(([position, stream, version, type]) => [position, stream, version, type]);

    // 1. The request: the transfer asked for.
    assert.match(headings[0], /^command [0-9a-f-]{36} — the request$/);
    assert.deepEqual(brief(rows[0]), [[String(requested.position), bank.streamA, '3', 'MoneyTransferRequested']]);
    // 2. The process manager's withdrawal, caused by the request's event; the event the trail was asked from is marked.
    assert.equal(headings[1], `command ${withdrawn.metadata.command_id} — caused by MoneyTransferRequested ${requested.event_id}`);
    assert.deepEqual(brief(rows[1]), [[String(withdrawn.position), bank.streamA, '4', 'WithdrawnFromAccount']]);
    assert.equal(await steps.nth(1).locator('tr').getAttribute('class'), 'changed');
    // 3. The process manager's deposit into B, caused by the withdrawal.
    assert.equal(headings[2], `command ${depositB.metadata.command_id} — caused by WithdrawnFromAccount ${withdrawn.event_id}`);
    assert.deepEqual(brief(rows[2]), [[String(depositB.position), bank.streamB, '2', 'DepositedIntoAccount']]);
    const depositData = JSON.parse(await steps.nth(2).locator('pre').textContent());
    assert.equal(depositData.deposit_amount, bank.amount);
    assert.equal(depositData.account_uuid, bank.b);
    await screenshot('trail.png');
  });

  step('live tail: a new deposit appears, then the tail pauses', async () => {
    await openTab('tail');
    const toggle = page.locator('#tail-toggle');
    assert.equal(await toggle.textContent(), 'Start');
    assert.equal(await page.locator('#tail-state').textContent(), 'stopped');
    // The tail starts at the head the server sees when the request arrives: wait for its answer before depositing.
    const [response] = await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).pathname === '/console/api/tail'),
      toggle.click(),
    ]);
    assert.equal(response.status(), 200);
    assert.match(response.headers()['content-type'], /^text\/event-stream/);
    assert.equal(await toggle.textContent(), 'Pause');
    // "live" once the page has the stream's answer, not before.
    await eventually(async () => assert.equal(await page.locator('#tail-state').textContent(), 'live'), {
      what: 'the tail saying live',
    });
    assert.equal(await page.locator('#tail-list tr').count(), 0);

    bank.tailDeposit = 17;
    const { data } = await api('POST', `/api/accounts/${bank.a}/deposit`, { deposit_amount: bank.tailDeposit });
    bank.balance = 1042 - bank.amount + bank.tailDeposit;
    assert.equal(data.current_balance, bank.balance);
    const [recorded] = (await streamEvents(bank.streamA)).slice(4);
    assert.equal(recorded.event_type, 'DepositedIntoAccount');

    const row = page.locator('#tail-list tr').filter({ hasText: bank.streamA });
    await row.waitFor({ state: 'visible' });
    const [[position, stream, version, type, json]] = await cells(page.locator('#tail-list tr'));
    assert.deepEqual([position, stream, version, type], [String(recorded.position), bank.streamA, '5', 'DepositedIntoAccount']);
    assert.deepEqual(JSON.parse(json), recorded.data);
    assert.equal(JSON.parse(json).deposit_amount, bank.tailDeposit);
    assert.equal(await row.getByRole('button', { name: 'Trail' }).count(), 1);

    // Pausing closes the stream (the fetch is aborted), so nothing more arrives.
    const [closed] = await Promise.all([
      page.waitForEvent('requestfailed', (r) => new URL(r.url()).pathname === '/console/api/tail'),
      toggle.click(),
    ]);
    assert.match(closed.failure().errorText, /ABORTED/);
    assert.equal(await page.locator('#tail-state').textContent(), 'paused');
    assert.equal(await toggle.textContent(), 'Start');
    await screenshot('tail.png');
  });

  step('projections & handlers: the lag chart, and a rebuild that catches up', async () => {
    const { data: status } = await api('GET', '/console/api/subscriptions');
    const projector = status.find((s) => s.kind === 'projector');
    assert.ok(projector, `a projector among ${JSON.stringify(status)}`);
    await openTab('subscriptions');
    const rows = page.locator('#sub-list tr');
    await eventually(
      async () => {
        const shown = await cells(rows);
        assert.deepEqual(
          shown.map(([name, kind]) => [name, kind]).sort(),
          status.map((s) => [s.name, s.kind]).sort(),
        );
        for (const [name, , state, , lag] of shown) {
          assert.equal(state, 'live', `${name} live`);
          assert.equal(lag, '0', `${name} caught up`);
        }
      },
      { what: 'every subscription listed, live' },
    );
    // Only projectors can be rebuilt.
    for (const s of status) {
      const rebuild = page.locator(`#sub-list tr[data-name="${s.name}"]`).getByRole('button', { name: 'Rebuild' });
      assert.equal(await rebuild.count(), s.kind === 'projector' ? 1 : 0, s.name);
    }
    // The chart has drawn: a line and a legend per subscription.
    const canvas = page.locator('#lag');
    await canvas.waitFor({ state: 'visible' });
    await eventually(
      async () => {
        const inked = await canvas.evaluate((c) => {
          const { data } = c.getContext('2d').getImageData(0, 0, c.width, c.height);
          let n = 0;
          for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
          return n;
        });
        assert.ok(inked > 100, `the lag chart drew ${inked} pixels`);
      },
      { what: 'the lag chart drawn' },
    );
    // The server keeps the samples: the chart begins before the page was opened.
    const [first, opened] = await page.evaluate(() => [Date.parse(lagSamples[0].at), performance.timeOrigin]);
    assert.ok(first < opened, `the chart's first sample (${first}) is older than the page (${opened})`);

    const row = page.locator(`#sub-list tr[data-name="${projector.name}"]`);
    dialogs.length = 0;
    await row.getByRole('button', { name: 'Rebuild' }).click();
    await eventually(async () => assert.equal(await outcome().textContent(), `done: rebuild ${projector.name}`), {
      what: 'the rebuild done',
    });
    assert.equal(await outcome().getAttribute('class'), 'muted');
    assert.deepEqual(dialogs, [
      { type: 'confirm', message: `rebuild ${projector.name}? Its tables are emptied and refilled from the log.` },
    ]);
    // The table shown may still be the one read before the rebuild. Wait for a refresh the
    // page asks for after it said done, mark the rows then shown, and read only rows drawn
    // after that (each refresh replaces them): all of them come from after the rebuild.
    const isStatus = (r) => new URL(r.url()).pathname === '/console/api/subscriptions';
    const refresh = await page.waitForRequest(isStatus);
    assert.equal((await refresh.response()).status(), 200);
    await (await refresh.response()).finished();
    await page.locator('#sub-list tr').evaluateAll((rows) => rows.forEach((r) => (r.dataset.stale = 'yes')));
    const fresh = page.locator(`#sub-list tr[data-name="${projector.name}"]:not([data-stale])`);
    const { head } = await (await fetch(`${base}/health`)).json();
    await eventually(
      async () => {
        const [[name, , state, position, lag, error]] = await cells(fresh);
        assert.deepEqual([name, state, position, lag, error], [projector.name, 'live', String(head), '0', '']);
      },
      { what: `${projector.name} back at lag 0` },
    );
    // What it rebuilt serves the same balances.
    if (projector.name === 'bank_read_model') {
      assert.equal((await api('GET', `/api/accounts/${bank.a}`)).data.current_balance, bank.balance);
      assert.equal((await api('GET', `/api/accounts/${bank.b}`)).data.current_balance, 500 + bank.amount);
    }
    await screenshot('subscriptions.png');
  });

  step('dead letters: a planted letter is replayed and goes', async () => {
    const { data: status } = await api('GET', '/console/api/subscriptions');
    const manager = status.find((s) => s.kind === 'process_manager');
    assert.ok(manager, `a process manager among ${JSON.stringify(status)}`);
    // The withdrawal the transfer process reacted to (by sending the deposit into B).
    const withdrawn = bank.eventsA[3];
    const { data: view } = await api('GET', `/console/api/events/${withdrawn.event_id}`);
    // The console shows data parsed; a dead letter keeps a RecordedEvent as serde writes it
    // (crates/rewind/src/envelope.rs): data is the JSON text, fields in declaration order.
    const recorded = {
      event_id: view.event_id,
      stream_id: view.stream_id,
      stream_version: view.stream_version,
      position: view.position,
      event_type: view.event_type,
      data: JSON.stringify(view.data),
      metadata: view.metadata,
      created_at: view.created_at,
    };
    const error = 'planted by console.test.mjs';
    const failedAt = new Date().toISOString();
    execFileSync(
      'python3',
      [
        '-c',
        `import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
subscription, position, event_id, event, error, failed_at = sys.argv[2:]
with db:
    db.execute(
        "INSERT INTO rewind_dead_letters (subscription, position, event_id, event, error, failed_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (subscription, int(position), event_id, event, error, failed_at),
    )
db.close()`,
        dbPath,
        manager.name,
        String(recorded.position),
        recorded.event_id,
        JSON.stringify(recorded),
        error,
        failedAt,
      ],
      { stdio: ['ignore', 'inherit', 'inherit'] },
    );
    // The server reads it back as the letter it would have written.
    const { data: letters } = await api('GET', '/console/api/dead-letters');
    assert.equal(letters.length, 1);
    assert.equal(letters[0].subscription, manager.name);
    const { data: text, created_at: at, ...envelope } = letters[0].event;
    assert.equal(typeof text, 'string');
    assert.deepEqual(JSON.parse(text), view.data);
    assert.equal(micros(at), micros(view.created_at));
    const { data: _data, created_at: _at, ...planted } = recorded;
    assert.deepEqual(envelope, planted);

    await openTab('letters');
    const rows = page.locator('#letter-list tr');
    await eventually(async () => assert.equal(await rows.count(), 1), { what: 'the letter listed' });
    const [[subscription, event, failedCell, errorCell]] = await cells(rows);
    assert.equal(subscription, manager.name);
    assert.deepEqual(JSON.parse(event), { position: withdrawn.position, type: 'WithdrawnFromAccount', id: withdrawn.event_id });
    assert.equal(micros(failedCell) / 1000n, BigInt(Date.parse(failedAt)));
    assert.equal(errorCell, error);
    await screenshot('dead-letters.png');

    dialogs.length = 0;
    await rows.getByRole('button', { name: 'Replay' }).click();
    const question = `replay event ${withdrawn.event_id} of ${manager.name}`;
    await eventually(async () => assert.equal(await outcome().textContent(), `done: ${question}`), { what: 'the replay done' });
    assert.equal(await outcome().getAttribute('class'), 'muted');
    assert.deepEqual(dialogs, [{ type: 'confirm', message: `${question}?` }]);
    await eventually(async () => assert.equal(await rows.count(), 0), { what: 'the letter list emptied' });
    assert.deepEqual((await api('GET', '/console/api/dead-letters')).data, []);
    // The manager runs again, and the transfer it had finished moved no money twice.
    await eventually(
      async () => {
        const again = (await api('GET', '/console/api/subscriptions')).data.find((s) => s.name === manager.name);
        assert.equal(again.state, 'live');
        assert.equal(again.lag, 0);
      },
      { what: `${manager.name} live again` },
    );
    assert.equal((await streamEvents(bank.streamB)).length, 2);
    assert.equal((await api('GET', `/api/accounts/${bank.b}`)).data.current_balance, 500 + bank.amount);
    await screenshot('dead-letters-replayed.png');
  });

  step("time travel: A's balance before the deposit, beside now", async () => {
    await openTab('past');
    const events = await streamEvents(bank.streamA);
    assert.equal(events.length, 5);
    await page.locator('#past-stream').fill(bank.streamA);
    await page.locator('#past-load').click();
    const slider = page.locator('#timeline');
    const balanceRow = page.locator('#past-diff tbody tr[data-field="account.current_balance"]');
    await eventually(
      async () => {
        assert.equal(await slider.isEnabled(), true);
        assert.equal(await slider.getAttribute('max'), String(events.length));
        assert.equal(await slider.inputValue(), String(events.length));
        assert.equal(await page.locator('#past-event').textContent(), `after #5 ${events[4].event_type}`);
        assert.deepEqual(await cells(balanceRow), [['account.current_balance', String(bank.balance), String(bank.balance)]]);
      },
      { what: 'the timeline at its last event' },
    );
    assert.equal(await balanceRow.getAttribute('class'), '');

    // The moment just after the event before the setup's deposit (version 2).
    const deposit = events.find((e) => e.event_type === 'DepositedIntoAccount' && e.data.deposit_amount === bank.deposit);
    assert.equal(deposit.stream_version, 2);
    const before = events[deposit.stream_version - 2];
    const balanceBefore = deposit.data.new_current_balance - deposit.data.deposit_amount;
    await slider.evaluate((input, value) => {
      input.value = value;
      input.dispatchEvent(new Event('input', { bubbles: true }));
    }, String(before.stream_version));
    await eventually(
      async () => {
        assert.equal(await page.locator('#past-event').textContent(), `after #${before.stream_version} ${before.event_type}`);
        assert.deepEqual(await cells(balanceRow), [['account.current_balance', String(balanceBefore), String(bank.balance)]]);
      },
      { what: 'the diff at the moment before the deposit' },
    );
    assert.equal(balanceBefore, 1000);
    assert.equal(await balanceRow.getAttribute('class'), 'changed');
    assert.equal(await page.locator('#past-at').inputValue(), before.created_at);
    const unchanged = page.locator('#past-diff tbody tr[data-field="account.status"]');
    assert.deepEqual(await cells(unchanged), [['account.status', 'open', 'open']]);
    assert.equal(await unchanged.getAttribute('class'), '');
    // Then, A had no movements yet; now it has three.
    assert.equal(await page.locator('#past-diff tbody tr[data-field^="transactions.3."]').count(), 0);
    assert.equal(await page.locator('#past-diff tbody tr[data-field="transactions.2.amount"]').getAttribute('class'), 'changed');
    const replay = await page.locator('#past-replay').inputValue();
    const match = /^bank replay --until (\S+) --into sqlite:\/\/bank-as-of-\S+\.db$/.exec(replay);
    assert.ok(match, `a replay command: ${replay}`);
    assert.equal(micros(match[1]), micros(before.created_at));
    assert.match(await outcome().textContent(), new RegExp(`^${bank.streamA} as it was at `));
    assert.equal(await outcome().getAttribute('class'), 'muted');
    await screenshot('time-travel.png');
  });

  step('time travel: an earlier moment answered late does not overwrite a later one', async () => {
    const events = await streamEvents(bank.streamA);
    const [early, last] = [events[0], events[events.length - 1]];
    const balanceRow = page.locator('#past-diff tbody tr[data-field="account.current_balance"]');
    const now = [['account.current_balance', String(bank.balance), String(bank.balance)]];
    const undo = await holding(
      (url) => url.pathname.endsWith(`/api/as-of/${bank.streamA}`) && url.searchParams.get('at') === early.created_at,
      () => eventually(async () => assert.deepEqual(await cells(balanceRow), now), { what: 'the later moment shown' }),
    );
    // Two moves of the slider, the first answered only once the second is shown.
    await page.evaluate(([first, second]) => {
      const slider = document.getElementById('timeline');
      slider.value = first;
      const moved = pickMoment();
      slider.value = second;
      return Promise.all([moved, pickMoment()]);
    }, [String(early.stream_version), String(last.stream_version)]);
    await undo();
    assert.deepEqual(await cells(balanceRow), now, 'the late answer was dropped');
    assert.equal(await page.locator('#past-event').textContent(), `after #${last.stream_version} ${last.event_type}`);
  });

  step('streams: a stream clicked first and answered late is not mixed into the one clicked next', async () => {
    await openTab('streams');
    const rows = page.locator('#stream-events tbody tr');
    const undo = await holding(
      (url) => url.pathname.endsWith(`/api/streams/${bank.streamA}`),
      () =>
        eventually(async () => assert.equal(await page.locator('#stream-title').textContent(), bank.streamB), {
          what: 'B shown (the view showed A before)',
        }),
    );
    await page.evaluate(([a, b]) => Promise.all([showStream(a), showStream(b)]), [bank.streamA, bank.streamB]);
    await undo();
    const shown = await cells(rows);
    assert.equal(shown.length, (await streamEvents(bank.streamB)).length, 'only B: A answered late and was dropped');
    assert.equal(await page.locator('#stream-title').textContent(), bank.streamB);
  });

  step('the page threw nothing', async () => {
    assert.deepEqual(pageErrors.map(String), []);
  });
});
