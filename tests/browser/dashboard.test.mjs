// The dashboard in real headless Chromium (Debian's), driven by playwright-core.
//
// Started by tests/tests/dashboard.rs, which runs the gateway with simulated
// users feeding it and passes, in the environment:
//   GATEWAY_URL    http://127.0.0.1:PORT
//   READ_TOKEN     a token with the read scope only
//   INGEST_TOKEN   a token that may send events (for the high-stress burst)
//   EXPORT_USER    a simulated user whose export is checked against the API
//   BURST_USER     the user the burst is sent for
//   ARTIFACT_DIR   where screenshots and the downloaded CSV go
//   CHROMIUM       the browser (default /usr/bin/chromium)
//
// Prints one line per step and, last, `RESULT {json}`; exits non-zero on the
// first failure with the reason.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set (run this through tests/tests/dashboard.rs)`);
  return v;
};
const BASE = env('GATEWAY_URL');
const READ_TOKEN = env('READ_TOKEN');
const INGEST_TOKEN = env('INGEST_TOKEN');
const EXPORT_USER = env('EXPORT_USER');
const BURST_USER = env('BURST_USER');
const ARTIFACTS = env('ARTIFACT_DIR');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');

// Without the background-networking flags Chromium tries to reach Google's
// services, which this machine's closed network refuses.
const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const log = (step, detail) => console.log(`step ${step}: ${detail ?? 'ok'}`);
const result = {};

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// RFC 4180: quoted fields may hold commas, quotes ("") and newlines.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else { quoted = false; }
      } else {
        field += c;
      }
    } else if (c === '"') {
      quoted = true;
    } else if (c === ',') {
      row.push(field); field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field); field = '';
      rows.push(row); row = [];
    } else {
      field += c;
    }
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

// Every request that is not to this machine is refused and remembered: the
// pages must work with no network beyond the gateway.
async function offlineContext(browser, options) {
  const context = await browser.newContext(options);
  const external = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) || url.protocol === 'data:' || url.protocol === 'blob:') {
      return route.continue();
    }
    external.push(url.href);
    return route.abort();
  });
  return { context, external };
}

async function watchErrors(page, errors) {
  page.on('pageerror', (e) => errors.push(String(e)));
}

async function signIn(page, token) {
  await page.goto(BASE + '/');
  await page.fill('#token', token);
  await page.click('#login-button');
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run scripts/install-browser-test-deps.sh`);
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  try {
    const pageErrors = [];

    // 1. A wrong token gets a clear login error and no dashboard.
    {
      const { context } = await offlineContext(browser, { viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      await watchErrors(page, pageErrors);
      await signIn(page, 'definitely-not-a-valid-token');
      await page.waitForSelector('#login-error:not([hidden])', { timeout: 10000 });
      const text = (await page.textContent('#login-error')) ?? '';
      assert(/did not accept this token/.test(text) && /invalid token/.test(text), `login error says: ${text}`);
      assert(await page.isHidden('#app'), 'the dashboard must stay hidden after a failed login');
      result.wrong_token_error = text;
      log('wrong-token', text);
      await context.close();
    }

    const { context, external } = await offlineContext(browser, {
      // 1400 px: the width at which the plugin table once overflowed its card.
      viewport: { width: 1400, height: 1000 },
      acceptDownloads: true,
    });
    const page = await context.newPage();
    await watchErrors(page, pageErrors);

    // 2. Sign in; the WebSocket goes live.
    await signIn(page, READ_TOKEN);
    await page.waitForSelector('#app:not([hidden])', { timeout: 10000 });
    await page.waitForFunction(() => document.getElementById('conn-status').textContent === 'live', null, { timeout: 10000 });
    log('login', 'live');

    // 3. The counters change over time (pushed, not polled).
    await page.waitForFunction(() => /^\d+$/.test(document.getElementById('total-events').textContent), null, { timeout: 10000 });
    const first = Number(await page.textContent('#total-events'));
    await page.waitForFunction((n) => Number(document.getElementById('total-events').textContent) > n, first, { timeout: 15000 });
    const second = Number(await page.textContent('#total-events'));
    await page.waitForFunction(() => Number(document.getElementById('events-per-minute').textContent) > 0, null, { timeout: 10000 });
    result.counters = { first, second, events_per_minute: Number(await page.textContent('#events-per-minute')) };
    log('counters', `${first} -> ${second}`);

    // 4. The circumplex and a timeline have plotted points.
    await page.waitForFunction(() => Number(document.getElementById('circumplex').dataset.points) >= 10, null, { timeout: 15000 });
    await page.waitForFunction(() => Number(document.getElementById('timeline').dataset.points) >= 3, null, { timeout: 15000 });
    const quadrants = await page.$$eval('#quadrants li', (lis) => lis.map((l) => l.dataset.quadrant));
    assert(quadrants.length === 4, `quadrant names shown: ${quadrants}`);
    result.circumplex_points = Number(await page.getAttribute('#circumplex', 'data-points'));
    result.timeline = {
      user: await page.getAttribute('#timeline', 'data-user'),
      points: Number(await page.getAttribute('#timeline', 'data-points')),
    };
    log('charts', `circumplex ${result.circumplex_points} points, timeline ${JSON.stringify(result.timeline)}`);
    // The simulated users send every source: their fused estimates stream in.
    await page.waitForSelector('#fused tbody tr[data-user]', { timeout: 15000 });
    result.fused = await page.$$eval('#fused tbody tr[data-user]', (rows) => rows.map((r) => ({
      user: r.dataset.user, sources: Number(r.dataset.sources), text: r.textContent,
    })));
    assert(result.fused.every((f) => f.sources >= 2), `fused rows: ${JSON.stringify(result.fused)}`);
    log('fused', `${result.fused.length} users with fused estimates`);
    // Timeline ticks are whole times of day, never ":15.500".
    const xLabels = await page.getAttribute('#timeline', 'data-x-labels');
    assert(xLabels && /^\d\d:\d\d/.test(xLabels) && !/\.\d/.test(xLabels), `timeline axis labels: ${xLabels}`);
    result.timeline.x_labels = xLabels;

    // 5. A high-stress burst shows up as a risk indicator and an alert.
    const sent = await page.evaluate(async ({ user, token }) => {
      const url = `ws://${location.host}/ws/emotions/stream?user_id=${encodeURIComponent(user)}&token=${encodeURIComponent(token)}`;
      const ws = new WebSocket(url);
      const replies = [];
      await new Promise((resolve, reject) => {
        ws.onerror = () => reject(new Error('burst socket failed'));
        ws.onmessage = (m) => {
          const msg = JSON.parse(m.data);
          if (msg.status === 'connected') {
            for (let i = 0; i < 12; i++) {
              ws.send(JSON.stringify({ source: 'physiological', emotion_label: 'stress', valence: -0.8, arousal: 0.92, confidence: 0.9 }));
            }
          } else {
            replies.push(msg.status);
            if (replies.length === 12) resolve();
          }
        };
      });
      ws.close();
      return replies;
    }, { user: BURST_USER, token: INGEST_TOKEN });
    assert(sent.every((s) => s === 'processed'), `burst replies: ${sent}`);
    await page.waitForFunction((u) => document.querySelector('#risk-high_stress .users').textContent.includes(u), BURST_USER, { timeout: 10000 });
    await page.waitForSelector(`#alerts li[data-user="${BURST_USER}"][data-kind="high_stress"]`, { timeout: 10000 });
    result.alert = await page.textContent(`#alerts li[data-user="${BURST_USER}"][data-kind="high_stress"]`);
    result.risk_high_stress = await page.textContent('#risk-high_stress');
    log('burst', result.alert);

    // 5b. The risk sweep flags the burst user over their history: a row in
    // the flagged table, a risk_sweep alert, and GET /api/risk agrees.
    await page.waitForSelector(`#flagged tr[data-user="${BURST_USER}"]`, { timeout: 20000 });
    result.flagged = await page.textContent(`#flagged tr[data-user="${BURST_USER}"]`);
    assert(/high stress/.test(result.flagged), `flagged row: ${result.flagged}`);
    await page.waitForSelector(`#alerts li[data-user="${BURST_USER}"][data-kind="risk_sweep"]`, { timeout: 10000 });
    const riskApi = await (await page.request.get(`${BASE}/api/risk`, { headers: { 'x-auth-token': READ_TOKEN } })).json();
    assert(riskApi.flagged.some((f) => f.user_id === BURST_USER), `GET /api/risk: ${JSON.stringify(riskApi)}`);
    log('risk sweep', result.flagged);

    // 6. The status cards are filled from the socket.
    await page.waitForFunction(() => document.querySelector('#plugins tbody').children.length > 0
      && document.getElementById('sync').children.length > 0
      && document.getElementById('devices').children.length > 0
      && document.getElementById('mqtt').children.length > 0, null, { timeout: 10000 });
    result.ble_pairings = await page.$$eval('#ble-pairings tr', (r) => Math.max(0, r.length - 1));
    result.mqtt = await page.textContent('#mqtt');
    assert(result.mqtt.includes('broker') && result.mqtt.includes('127.0.0.1:'), `MQTT card: ${result.mqtt}`);
    log('status', `plugins, sync, devices, MQTT shown; BLE pairings ${result.ble_pairings}`);
    // Every plugin column fits its card (no hidden error or µs/reading column).
    const fit = await page.evaluate(() => {
      const card = document.querySelector('#plugins').closest('.card').getBoundingClientRect();
      const heads = [...document.querySelectorAll('#plugins th')].map((c) => c.getBoundingClientRect().right);
      return { card_right: card.right, last_column_right: Math.max(...heads) };
    });
    assert(fit.last_column_right <= fit.card_right + 1, `the plugin table overflows its card: ${JSON.stringify(fit)}`);
    result.plugin_table = fit;

    // 7. The export downloads a CSV whose rows match the API.
    const to = new Date(Date.now() - 2000).toISOString();
    await page.fill('#export-user', EXPORT_USER);
    await page.fill('#export-to', to);
    await page.selectOption('#export-format', 'csv');
    await page.selectOption('#export-kind', 'events');
    const [download] = await Promise.all([
      page.waitForEvent('download', { timeout: 15000 }),
      page.click('#export-button'),
    ]);
    const csvPath = join(ARTIFACTS, download.suggestedFilename());
    await download.saveAs(csvPath);
    const rows = parseCsv(readFileSync(csvPath, 'utf8'));
    const header = rows.shift();
    const col = (name) => {
      const i = header.indexOf(name);
      assert(i >= 0, `CSV header lacks ${name}: ${header}`);
      return i;
    };
    const apiResp = await page.request.get(`${BASE}/api/users/${encodeURIComponent(EXPORT_USER)}/events?limit=100000&to=${encodeURIComponent(to)}`, {
      headers: { 'x-auth-token': READ_TOKEN },
    });
    assert(apiResp.ok(), `events API: ${apiResp.status()}`);
    const apiEvents = (await apiResp.json()).events;
    assert(rows.length > 0, 'the export has no rows');
    assert(rows.length === apiEvents.length, `CSV has ${rows.length} rows, the API ${apiEvents.length} events`);
    rows.forEach((r, i) => {
      const e = apiEvents[i];
      assert(r[col('event_id')] === e.event_id, `row ${i}: event_id ${r[col('event_id')]} != ${e.event_id}`);
      assert(r[col('user_id')] === e.user_id, `row ${i}: user_id`);
      assert(r[col('session_id')] === e.session_id, `row ${i}: session_id`);
      assert(r[col('source')] === e.source, `row ${i}: source`);
      assert(r[col('emotion_label')] === e.emotion_label, `row ${i}: emotion_label`);
      assert(Number(r[col('valence')]) === e.valence, `row ${i}: valence ${r[col('valence')]} != ${e.valence}`);
      assert(Number(r[col('arousal')]) === e.arousal, `row ${i}: arousal`);
      assert(r[col('timestamp')] === e.timestamp, `row ${i}: timestamp ${r[col('timestamp')]} != ${e.timestamp}`);
      const ctx = r[col('context')];
      assert(JSON.stringify(ctx ? JSON.parse(ctx) : null) === JSON.stringify(e.context ?? null), `row ${i}: context`);
    });
    result.export = { file: csvPath, rows: rows.length };
    log('export', `${rows.length} rows match the API (${csvPath})`);

    // 8. A screenshot as the test's artefact (laptop), after one more redraw.
    await page.waitForTimeout(1200);
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    result.screenshot = shot;
    log('screenshot', shot);
    assert(external.length === 0, `the dashboard tried to reach the network: ${external}`);

    // 8b. The burst user's printable report, opened from the flagged table
    // (same tab: the token stays in this tab's session storage).
    await Promise.all([
      page.waitForURL(/report\.html/, { timeout: 10000 }),
      page.click(`#flagged tr[data-user="${BURST_USER}"] a.report-link`),
    ]);
    await page.waitForSelector('#report[data-loaded="true"]', { timeout: 10000 });
    const reportText = await page.textContent('#report');
    assert(reportText.includes(BURST_USER), `the report names its user: ${reportText}`);
    const highStress = Number((reportText.match(/High-stress events\s*(\d+)/) || [])[1]);
    assert(highStress >= 12, `the report counts the burst: ${reportText}`);
    const recommendations = await page.$$eval('#r-recommendations li', (l) => l.map((x) => x.textContent));
    assert(recommendations.length > 0, 'the report recommends something');
    await page.emulateMedia({ media: 'print' });
    assert(await page.isHidden('#print'), 'the print button is not printed');
    const reportShot = join(ARTIFACTS, 'report.png');
    await page.screenshot({ path: reportShot, fullPage: true });
    await page.emulateMedia({ media: 'screen' });
    result.report = { high_stress_events: highStress, recommendations, screenshot: reportShot };
    log('report', `${highStress} high-stress events, ${recommendations.length} recommendations (${reportShot})`);

    // 9. Readable on a phone: one column, no sideways scrolling.
    {
      const { context: phone } = await offlineContext(browser, {
        viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
      });
      const p = await phone.newPage();
      await watchErrors(p, pageErrors);
      await signIn(p, READ_TOKEN);
      await p.waitForFunction(() => document.getElementById('conn-status').textContent === 'live', null, { timeout: 10000 });
      await p.waitForFunction(() => Number(document.getElementById('circumplex').dataset.points) > 0, null, { timeout: 15000 });
      const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert(overflow <= 1, `the phone layout scrolls sideways by ${overflow}px`);
      const phoneShot = join(ARTIFACTS, 'dashboard-phone.png');
      await p.screenshot({ path: phoneShot, fullPage: true });
      result.phone_screenshot = phoneShot;
      log('phone', phoneShot);
      await phone.close();
    }

    // 10. /docs renders with no network and lists every endpoint.
    {
      const { context: docsCtx, external: docsExternal } = await offlineContext(browser, { viewport: { width: 1280, height: 900 } });
      const p = await docsCtx.newPage();
      await watchErrors(p, pageErrors);
      await p.goto(BASE + '/docs');
      await p.waitForSelector('.opblock', { timeout: 20000 });
      const shown = await p.$$eval('.opblock', (blocks) => blocks.map((b) => {
        const method = b.querySelector('.opblock-summary-method')?.textContent?.trim().toLowerCase();
        const pathEl = b.querySelector('.opblock-summary-path');
        const path = pathEl?.getAttribute('data-path') || pathEl?.textContent?.trim();
        return `${method} ${path}`;
      }));
      const spec = await (await p.request.get(BASE + '/api/openapi.json')).json();
      const expected = [];
      for (const [path, item] of Object.entries(spec.paths)) {
        for (const m of Object.keys(item)) {
          if (['get', 'post', 'put', 'delete', 'patch'].includes(m)) expected.push(`${m} ${path}`);
        }
      }
      const missing = expected.filter((e) => !shown.includes(e));
      assert(missing.length === 0, `/docs does not show: ${missing}`);
      for (const must of ['get /ws/dashboard', 'get /metrics', 'get /api/export', 'get /health', 'get /ws/emotions/stream', 'post /api/dashboard/ticket']) {
        assert(shown.includes(must), `/docs lacks ${must}`);
      }
      assert(docsExternal.length === 0, `/docs tried to reach the network: ${docsExternal}`);
      const docsShot = join(ARTIFACTS, 'docs.png');
      await p.screenshot({ path: docsShot });
      result.docs = { endpoints: shown.length, screenshot: docsShot };
      log('docs', `${shown.length} operations listed, none missing`);
      await docsCtx.close();
    }

    assert(pageErrors.length === 0, `JavaScript errors on the pages: ${pageErrors}`);
    await context.close();
  } finally {
    await browser.close();
  }
  console.log('RESULT ' + JSON.stringify(result));
}

main().catch((e) => {
  console.error('FAILED: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
