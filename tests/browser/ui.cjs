// Ward's web UI in a real headless Chromium, driven by playwright-core.
//
// Run by tests/it/browser.rs, which builds the demo store, starts `ward serve --http` and
// passes, in the environment:
//   WARD_URL            the HTTP listener (http://127.0.0.1:PORT)
//   WARD_EXPECT         JSON: versions, raw, timeline, training, quarantine, model, patient
//   WARD_TOKEN_STEWARD  a steward's bearer token (datasets_read, historical_identified)
//   WARD_TOKEN_OFFICER  a privacy officer's (audit_read only)
//   WARD_TOKEN_NURSE    a clinician's (neither)
//   WARD_SCREENSHOTS    where to write the screenshots
//   WARD_CHROMIUM       the browser (default /usr/bin/chromium)
// and NODE_PATH pointing at the node_modules that .ci/browser.sh installs outside the clone.
//
// Prints one line `RESULT {json}` with what it saw; the Rust test asserts on it. Any step
// that cannot be done (an element missing, a timeout) fails the script with its message.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const base = process.env.WARD_URL;
const expect = JSON.parse(process.env.WARD_EXPECT || '{}');
const shots = process.env.WARD_SCREENSHOTS || fs.mkdtempSync(path.join(os.tmpdir(), 'ward-shots-'));
const tokens = {
  steward: process.env.WARD_TOKEN_STEWARD,
  officer: process.env.WARD_TOKEN_OFFICER,
  nurse: process.env.WARD_TOKEN_NURSE,
};

// The flags Chromium needs on a closed network in a container: no sandbox (root), no GPU,
// and none of its background connections (which this network refuses).
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function check(cond, message) {
  if (!cond) throw new Error(message);
}

// The hash shown on a version page.
async function pageHash(page) {
  return (await page.locator('main code.hash').first().textContent()).trim();
}

// The kind shown in a version page's heading: "name (kind)".
async function pageKind(page) {
  const t = await page.locator('main h1 small').first().textContent();
  return t.replace(/[()]/g, '').trim();
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ward-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.WARD_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 800 },
  });
  // One context (the persistent one) for the steward; others get their own pages with
  // their own header set per page.
  const result = {};
  // Every request any page makes (none may leave the server: no CDN, no fonts) and every
  // console error (a style sheet or image blocked by the Content-Security-Policy logs one).
  const foreign = [];
  const consoleErrors = [];
  try {
    const asRole = async (role) => {
      const page = await browser.newPage();
      await page.setExtraHTTPHeaders({ Authorization: `Bearer ${tokens[role]}` });
      page.setDefaultTimeout(20000);
      page.on('request', (r) => { if (!r.url().startsWith(base + '/')) foreign.push(r.url()); });
      page.on('console', (m) => {
        // The refusal pages are answered 401/403 on purpose; Chromium logs those loads.
        if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) consoleErrors.push(m.text());
      });
      page.on('pageerror', (e) => consoleErrors.push(String(e)));
      return page;
    };

    // 1. The catalog lists every version of the demo (all kinds, paging through).
    const steward = await asRole('steward');
    let res = await steward.goto(`${base}/ui/?limit=500`);
    check(res.status() === 200, `catalog: HTTP ${res.status()}`);
    const listed = await steward.locator('table tbody tr th a').evaluateAll(
      (as) => as.map((a) => a.getAttribute('title')));
    const missing = expect.versions.filter((h) => !listed.includes(h));
    result.catalog = { listed: listed.length, missing };
    await steward.goto(`${base}/ui/`);
    await steward.screenshot({ path: path.join(shots, 'catalog.png'), fullPage: false });
    // The embedded style sheet applied (the header's colour comes from it).
    result.styled = await steward.evaluate(() => getComputedStyle(document.querySelector('header')).backgroundColor);

    // 2. The lineage: from the training set, click the drawing's nodes back to raw.
    await steward.goto(`${base}/ui/versions/${encodeURIComponent(expect.training)}`);
    const kinds = [await pageKind(steward)];
    await steward.locator('section[aria-labelledby=h-lineage]').screenshot({ path: path.join(shots, 'lineage.png') });
    for (const next of ['timeline', 'curated', 'raw']) {
      const node = steward.locator(`figure.lineage svg a.node.kind-${next}`).first();
      check(await node.count() > 0, `no ${next} node in the lineage of ${await pageHash(steward)}`);
      const href = await node.getAttribute('href');
      await Promise.all([steward.waitForURL((u) => u.href.endsWith(href)), node.click()]);
      await steward.waitForSelector('main code.hash');
      kinds.push(await pageKind(steward));
    }
    result.lineage = { kinds, reached: await pageHash(steward) };

    // 2b. Forward from the training set to its model card, and back by the card's link.
    await steward.goto(`${base}/ui/versions/${encodeURIComponent(expect.training)}`);
    const modelNode = steward.locator('figure.lineage svg a.node.kind-model').first();
    check(await modelNode.count() > 0, 'no model node in the lineage of the training set');
    const modelHref = await modelNode.getAttribute('href');
    await Promise.all([steward.waitForURL((u) => u.href.endsWith(modelHref)), modelNode.click()]);
    await steward.waitForSelector('main code.hash');
    const modelKind = await pageKind(steward);
    await Promise.all([
      steward.waitForURL((u) => u.pathname.startsWith('/ui/models/')),
      steward.getByRole('link', { name: 'Model card: metrics and training set' }).click(),
    ]);
    await steward.waitForSelector('table.metrics');
    const cardHash = await pageHash(steward);
    const metrics = await steward.locator('table.metrics tbody th').evaluateAll((ths) => ths.map((t) => t.textContent.trim()));
    await steward.screenshot({ path: path.join(shots, 'model.png'), fullPage: false });
    await Promise.all([
      steward.waitForURL((u) => u.pathname.startsWith('/ui/versions/')),
      steward.locator('#training-link').click(),
    ]);
    await steward.waitForSelector('main code.hash');
    result.model = { kind: modelKind, card_hash: cardHash, metrics, back_to: await pageHash(steward) };

    // 2c. A feature set's page: its definition, labels and a small plot per feature.
    res = await steward.goto(`${base}/ui/feature-sets`);
    check(res.status() === 200, `feature sets: HTTP ${res.status()}`);
    await Promise.all([
      steward.waitForURL((u) => u.pathname === '/ui/feature-sets/readmission'),
      steward.getByRole('link', { name: 'readmission', exact: true }).click(),
    ]);
    await steward.waitForSelector('svg.histogram');
    const fsBars = await steward.locator('svg.histogram rect.bar').evaluateAll((rs) =>
      rs.filter((r) => { const b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length);
    result.feature_set = {
      histograms: await steward.locator('svg.histogram').count(),
      visible_bars: fsBars,
      has_label: (await steward.locator('table.features tr.label').count()) > 0,
      toml_shown: ((await steward.locator('pre.toml').textContent()) || '').includes('name = "readmission"'),
    };
    await steward.screenshot({ path: path.join(shots, 'feature-set.png'), fullPage: false });

    // 3. A plot renders: the timeline's statistics, reached by its link.
    await steward.goto(`${base}/ui/versions/${encodeURIComponent(expect.timeline)}`);
    await Promise.all([
      steward.waitForURL((u) => u.pathname.endsWith('/stats')),
      steward.getByRole('link', { name: 'Column statistics and histograms' }).click(),
    ]);
    await steward.waitForSelector('svg.histogram');
    const histograms = await steward.locator('svg.histogram').count();
    const visible = await steward.locator('svg.histogram rect.bar').evaluateAll((rs) =>
      rs.filter((r) => { const b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).length);
    const featureHistograms = await steward.locator('section[aria-labelledby=h-features] svg.histogram').count();
    const features = await steward.locator('table.features tbody tr').count();
    result.plot = { histograms, visible_bars: visible, features, feature_histograms: featureHistograms };
    await steward.screenshot({ path: path.join(shots, 'stats.png'), fullPage: false });
    const perFeature = steward.locator('section[aria-labelledby=h-features] h3');
    if (await perFeature.count() > 0) {
      await perFeature.evaluate((el) => el.scrollIntoView({ block: 'start' }));
      await steward.screenshot({ path: path.join(shots, 'features.png'), fullPage: false });
    }

    // 4. The quarantine browser: bad records with their reasons.
    await steward.goto(`${base}/ui/versions/${encodeURIComponent(expect.quarantine)}`);
    await Promise.all([
      steward.waitForURL((u) => u.pathname.endsWith('/quarantine')),
      steward.getByRole('link', { name: 'Quarantined records and their reasons' }).click(),
    ]);
    const qrows = await steward.locator('table.quarantine tbody tr').count();
    const reasons = await steward.locator('table.quarantine tbody tr td:nth-child(4) code')
      .evaluateAll((cs) => [...new Set(cs.map((c) => c.textContent))].sort());
    result.quarantine = { rows: qrows, reasons };
    await steward.screenshot({ path: path.join(shots, 'quarantine.png'), fullPage: false });

    // 5. The keyboard alone on the catalog: the skip link, the search field, a result.
    await steward.goto(`${base}/ui/`);
    await steward.keyboard.press('Tab');
    const first = await steward.evaluate(() => document.activeElement.textContent.trim());
    check(first === 'Skip to content', `the first Tab stop is ${JSON.stringify(first)}`);
    await steward.keyboard.press('Enter');
    const skipFocusedMain = await steward.evaluate(() => document.activeElement.id === 'main');
    await steward.keyboard.press('Tab');
    const inSearch = await steward.evaluate(() => document.activeElement.id);
    check(inSearch === 'q', `Tab after the skip link focuses ${JSON.stringify(inSearch)}, not the search`);
    const outline = await steward.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    await steward.keyboard.type('readmission');
    await Promise.all([
      steward.waitForURL((u) => u.search.includes('q=readmission')),
      steward.keyboard.press('Enter'),
    ]);
    await steward.waitForSelector('#count');
    const searchSubmitted = steward.url().includes('q=readmission');
    // Tab through the form (kind, tag, button) to the first result and open it.
    let opened = null;
    for (let i = 0; i < 40; i++) {
      await steward.keyboard.press('Tab');
      const href = await steward.evaluate(() => {
        const a = document.activeElement;
        return a && a.closest('tbody') && a.tagName === 'A' ? a.getAttribute('title') : null;
      });
      if (href === expect.training) {
        await Promise.all([
          steward.waitForURL((u) => u.pathname.startsWith('/ui/versions/')),
          steward.keyboard.press('Enter'),
        ]);
        await steward.waitForSelector('main code.hash');
        opened = await pageHash(steward);
        break;
      }
    }
    result.keyboard = {
      skip_focused_main: skipFocusedMain,
      search_submitted: searchSubmitted,
      opened,
      focus_outline: outline,
    };

    // 6. Refusals: each role outside its permission gets a page saying so.
    const refusal = async (role, url) => {
      const p = await asRole(role);
      const r = await p.goto(`${base}${url}`);
      const heading = (await p.locator('main h1').textContent()).trim();
      const alert = (await p.locator('[role=alert]').textContent()).trim();
      return { page: p, out: { status: r.status(), heading, alert } };
    };
    const nurse = await refusal('nurse', '/ui/');
    await nurse.page.screenshot({ path: path.join(shots, 'refused.png'), fullPage: false });
    result.refusals = {
      nurse_catalog: nurse.out,
      steward_audit: (await refusal('steward', '/ui/audit')).out,
      officer_catalog: (await refusal('officer', '/ui/')).out,
    };

    // 7. The privacy officer: who accessed the patient, from where, allowed or refused.
    const officer = await asRole('officer');
    res = await officer.goto(`${base}/ui/audit`);
    check(res.status() === 200, `audit page: HTTP ${res.status()}`);
    await officer.getByLabel('Patient id').fill(expect.patient);
    await Promise.all([
      officer.waitForURL((u) => u.search.includes('patient=')),
      officer.getByRole('button', { name: 'Search' }).click(),
    ]);
    const status = (await officer.locator('#chain-status').textContent()).trim();
    const rows = await officer.locator('table.audit tbody tr').evaluateAll((trs) => trs.map((tr) => {
      const text = (sel) => tr.querySelector(sel).textContent.trim();
      return {
        subject: text('.who'), client: text('td.client'),
        decision: text('td.decision'), patients: text('td.patients'),
      };
    }));
    check(rows.every((r) => r.patients.includes(expect.patient)), `rows not of the patient: ${JSON.stringify(rows)}`);
    result.audit = {
      verified: status.startsWith('Chain verified'),
      status,
      subjects: [...new Set(rows.map((r) => r.subject))].sort(),
      decisions: [...new Set(rows.map((r) => r.decision))].sort(),
      clients: rows.map((r) => r.client),
    };
    await officer.screenshot({ path: path.join(shots, 'audit.png'), fullPage: false });
    result.foreign_requests = foreign;
    result.console_errors = consoleErrors;
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log('screenshots in ' + shots);
  console.log('RESULT ' + JSON.stringify(result));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
