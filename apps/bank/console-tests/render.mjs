// How long each console view takes in a browser on a large store: from the page
// asking for it to its rows laid out and painted, as chromium shows the page to an
// operator. Not a test: a benchmark, run by hand on a store the console
// bench kept (BENCHMARKS.md, "The console on a large store"):
//
//   cargo bench -p bank --bench console -- --sqlite-at /tmp/console.db
//   cargo build --release -p bank
//   node render.mjs /tmp/console.db            (BANK_BIN defaults to target/release/bank)
//
// Each view is timed 10 times; the table gives the median and the slowest.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const BANK_BIN = process.env.BANK_BIN || path.resolve(here, '../../../target/release/bank');
const database = process.argv[2];
if (!database) {
  console.error('usage: node render.mjs PATH-OF-A-SQLITE-STORE');
  process.exit(2);
}

const server = spawn(BANK_BIN, ['serve', '--listen', '127.0.0.1:0', '--database', `sqlite://${database}`], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, RUST_LOG: 'warn' },
});
const base = await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.on('data', (chunk) => {
    out += chunk;
    const line = /listening on (\S+)/.exec(out);
    if (line) resolve(line[1]);
  });
  server.on('exit', (code) => reject(new Error(`bank serve exited with ${code}`)));
});

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${base}/console/`);
  await page.locator('#stream-list tr').first().waitFor();

  // A fresh server projects the whole store first: time the views once it is live.
  let head = 0;
  for (let waited = 0; ; waited += 1) {
    const { data } = await (await fetch(`${base}/console/api/subscriptions`)).json();
    head = Math.max(0, ...data.map((s) => s.position));
    if (data.length > 0 && data.every((s) => s.lag === 0)) break;
    if (waited > 600) throw new Error('the projections did not catch up in 10 minutes');
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
  // The stream and event every view below starts from: the middle of the log.
  const middle = await (await fetch(`${base}/console/api/events?from=${Math.ceil(head / 2)}&limit=1`)).json();
  if (!middle.data?.length) throw new Error('the store is empty');
  console.log(`console views in chromium over ${head} events\n`);
  const { stream_id: stream, event_id: event, position } = middle.data[0];

  // Each view is the page's own function for it, timed inside the page from the call
  // to the second animation frame after it (its rows laid out and painted), so the
  // driver's round trips are not counted.
  const inPage = (body, arg) =>
    page.evaluate(
      async ([source, value]) => {
        const view = new Function('value', `return (async () => { ${source} })()`);
        const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
        const started = performance.now();
        await view(value);
        await frame();
        await frame();
        return performance.now() - started;
      },
      [body, arg],
    );
  await page.locator('nav button[data-view="streams"]').click();
  await page.fill('#prefix', 'account-');
  const views = [
    ['streams by prefix (50)', () => inPage('await searchStreams(false);')],
    ["a stream's events (the first 100 of 1,000)", () => inPage('await showStream(value);', stream)],
    ['the global order mid-log (100)', async () => {
      await page.locator('nav button[data-view="log"]').click();
      return inPage('await log(value);', position);
    }],
    ["an event's trail (a 10,000-event scan)", () => inPage('await showTrail(value);', event)],
    ['time travel: the timeline (1,000 events) and the account then and now', async () => {
      await page.locator('nav button[data-view="past"]').click();
      await page.fill('#past-stream', stream);
      return inPage('await loadTimeline();');
    }],
    ['time travel: another moment on the slider', () =>
      inPage(`const slider = document.getElementById('timeline');
        slider.value = String(Math.max(1, Number(slider.max) - 1 - Math.floor(Math.random() * 400)));
        await pickMoment();`)],
    ['projections & handlers', async () => {
      await page.locator('nav button[data-view="subscriptions"]').click();
      return inPage('await subscriptions();');
    }],
  ];

  console.log(`| view | median | slowest of 10 |`);
  console.log(`| --- | ---: | ---: |`);
  for (const [name, view] of views) {
    const times = [];
    for (let i = 0; i < 10; i++) times.push(await view());
    times.sort((a, b) => a - b);
    console.log(`| ${name} | ${times[5].toFixed(0)} ms | ${times[9].toFixed(0)} ms |`);
  }
} finally {
  await browser.close();
  server.kill('SIGTERM');
}
