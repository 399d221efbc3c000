// Browser tests of the designer: Debian's Chromium, headless, driven by playwright-core, against a real
// `pipelines serve`. Called by the C# integration tests (DesignerTests) with: node designer.mjs SCENARIO URL KEY OUTDIR
// Page errors and console errors fail every scenario; screenshots of each step go to OUTDIR.
import { chromium } from 'playwright-core';

const [scenario, url, key, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
const shot = (name) => page.screenshot({ path: `${out}/${scenario}-${name}.png` });
const fail = async (message) => { await shot('failure').catch(() => {}); console.error(`FAIL: ${message}`); await browser.close(); process.exit(1); };
const expect = async (condition, message) => { if (!(await condition)) await fail(message); };
const log = (m) => console.log(`[${scenario}] ${m}`);

await page.goto(url);
await page.fill('[data-testid="key"]', key);
await page.waitForSelector('[data-testid="palette-circuits.attribute"]');

let dropped = 0;
async function drop(type) {
  const canvas = await page.locator('.react-flow__pane').boundingBox();
  const x = 30 + (dropped % 3) * 300, y = 20 + Math.floor(dropped / 3) * 220;
  dropped++;
  await page.dragAndDrop(`[data-testid="palette-${type}"]`, '.react-flow__pane', { targetPosition: { x: Math.min(x, canvas.width - 250), y: Math.min(y, canvas.height - 150) } });
}
async function connect(from, output, to, input) {
  await page.dragAndDrop(`[data-testid="out-${from}-${output}"]`, `[data-testid="in-${to}-${input}"]`);
}
const select = (step) => page.click(`[data-testid="node-${step}"] .step-title`);
async function setField(step, field, value) {
  await select(step);
  await page.fill(`[data-testid="field-${field}"]`, String(value));
  await page.press(`[data-testid="field-${field}"]`, 'Tab');
}
const edgeCount = () => page.locator('[data-testid^="rf__edge-"]').count();
async function waitForEdges(n) {
  for (let k = 0; k < 50 && (await edgeCount()) !== n; k++) await page.waitForTimeout(100);
  return (await edgeCount()) === n;
}
async function openWorkflow(name) {
  await page.selectOption('[data-testid="open"]', name);
  await page.waitForSelector(`[data-testid="message"]:has-text("opened ${name}")`);
  await page.waitForSelector('.react-flow__node');
}
async function runFromDialog(parameters = {}) {
  await page.click('[data-testid="run"]');
  await page.waitForSelector('[data-testid="run-dialog"]');
  for (const [name, value] of Object.entries(parameters)) await page.fill(`[data-testid="param-${name}"]`, String(value));
  await page.click('[data-testid="run-submit"]');
  await page.waitForSelector('[data-testid="run-dialog"]', { state: 'detached' });
}
const runStatus = () => page.getAttribute('[data-testid="run-info"]', 'data-status');
async function waitForRun(status, timeout = 240000) {
  await page.waitForSelector(`[data-testid="run-info"][data-status="${status}"]`, { timeout });
}
async function view(step, port) {
  await select(step);
  await page.click(`[data-testid="view-${port}"]`);
  await page.waitForSelector('[data-testid="viewer"]');
}
async function closeViewer() {
  await page.keyboard.press('Escape');
  await page.waitForSelector('[data-testid="viewer"]', { state: 'detached' });
}

/** Every edge's drawn path, sampled, must stay out of every node but its own two ends. */
async function edgesClearOfNodes() {
  return page.evaluate(() => {
    const nodes = [...document.querySelectorAll('.react-flow__node')].map((n) => ({ id: n.dataset.id, r: n.getBoundingClientRect() }));
    const bad = [];
    for (const g of document.querySelectorAll('.react-flow__edge')) {
      const path = g.querySelector('path.react-flow__edge-path');
      const id = g.getAttribute('data-testid') ?? '';
      const m = /^rf__edge-(.+)\.[^.]+->(.+)\.[^.#]+#\d+$/.exec(id);
      if (!path || !m) continue;
      const [, source, target] = m;
      const ctm = path.getScreenCTM();
      const length = path.getTotalLength();
      for (let k = 1; k < 80; k++) {
        const p = path.getPointAtLength((length * k) / 80).matrixTransform(ctm);
        const hit = nodes.find((n) => n.id !== source && n.id !== target && p.x > n.r.left + 2 && p.x < n.r.right - 2 && p.y > n.r.top + 2 && p.y < n.r.bottom - 2);
        if (hit) { bad.push(`${id} under ${hit.id}`); break; }
      }
    }
    return bad;
  });
}

try {
if (scenario === 'quickstart') {
  // Search narrows the palette.
  await page.fill('[data-testid="search"]', 'faithful');
  await expect((await page.locator('[data-testid="palette-circuits.faithfulness"]').count()) === 1, 'search finds circuits.faithfulness');
  await expect((await page.locator('[data-testid="palette-data.load-jsonl"]').count()) === 0, 'search hides data.load-jsonl');
  await page.fill('[data-testid="search"]', '');
  for (const type of ['model.train-toy', 'data.toy-task', 'data.toy-task', 'circuits.attribute', 'circuits.prune', 'circuits.faithfulness', 'report.circuit']) await drop(type);
  await expect((await page.locator('.react-flow__node').count()) === 7, 'seven nodes after the drops');
  await connect('trainToy', 'model', 'attribute', 'model');
  await connect('trainToy', 'model', 'faithfulness', 'model');
  await connect('toyTask', 'dataset', 'attribute', 'dataset');
  await connect('toyTask2', 'dataset', 'faithfulness', 'dataset');
  await connect('attribute', 'scores', 'prune', 'scores');
  await connect('attribute', 'scores', 'faithfulness', 'scores');
  await connect('prune', 'circuit', 'circuit', 'circuit');
  await connect('faithfulness', 'metrics', 'circuit', 'faithfulness');
  await expect(await waitForEdges(8), `eight connections, got ${await edgeCount()}`);
  await setField('trainToy', 'steps', 60);
  await setField('toyTask', 'count', 24);
  await setField('toyTask2', 'count', 24);
  await setField('toyTask2', 'seed', 202);
  await page.click('[data-testid="layout"]');
  await shot('built');
  // A bad value is flagged at its field by the server's validation.
  await setField('toyTask', 'count', -5);
  await page.click('[data-testid="validate"]');
  await select('toyTask');
  await page.waitForSelector('[data-testid="error-count"]');
  await shot('invalid-field');
  await setField('toyTask', 'count', 24);
  await page.fill('[data-testid="name"]', 'designed');
  await page.click('[data-testid="save"]');
  await page.waitForSelector('[data-testid="message"]:has-text("saved designed")');
  await page.click('[data-testid="validate"]');
  await page.waitForSelector('[data-testid="message"]:has-text("valid")');
  await runFromDialog();
  await expect(/[?&]run=/.test(page.url()), `the run id is in the URL: ${page.url()}`);
  await waitForRun('succeeded');
  await expect((await page.locator('[data-status="failed"]').count()) === 0, 'no step may fail');
  await expect((await page.locator('[data-testid="status-circuit"]').getAttribute('data-status')) === 'computed', 'the report step computed');
  await shot('ran');
  log('ran');

  // Viewers, each from this run's artifacts.
  await view('toyTask', 'dataset');
  await page.waitForSelector('[data-testid="dataset-table"] tbody tr');
  await expect((await page.locator('[data-testid="dataset-table"] tbody tr').count()) === 24, 'the dataset table shows the 24 pairs');
  await page.click('[data-testid="sort-clean"]');
  const first = await page.textContent('[data-testid="dataset-table"] tbody tr:first-child td:nth-child(2)');
  await page.click('[data-testid="sort-clean"]');
  const reversed = await page.textContent('[data-testid="dataset-table"] tbody tr:first-child td:nth-child(2)');
  await expect(first !== reversed, 'sorting twice reverses the order');
  await shot('view-dataset');
  await closeViewer();

  await view('attribute', 'scores');
  const canvas = await page.waitForSelector('[data-testid="heatmap-canvas"]');
  const box = await canvas.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.waitForSelector('[data-testid="heatmap-tooltip"]:has-text("score")');
  await shot('view-scores-heatmap');
  await closeViewer();

  await view('prune', 'circuit');
  await page.waitForSelector('[data-testid="circuit-edge"]');
  const edges = await page.locator('[data-testid="circuit-edge"]').count();
  await expect(edges > 0, 'the circuit graph draws its edges');
  await page.locator('[data-testid="circuit-edge"]').first().hover({ force: true });
  await page.waitForSelector('[data-testid="circuit-tooltip"]:has-text("score")');
  await shot('view-circuit-graph');
  await page.click('[data-testid="circuit-as-matrix"]');
  await page.waitForSelector('[data-testid="heatmap-canvas"]');
  await shot('view-circuit-matrix');
  await closeViewer();

  await select('circuit');
  await page.click('[data-testid="view-figures"]');
  await page.waitForSelector('[data-testid="image-grid"] img');
  await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="image-grid"] img')].every((i) => i.complete && i.naturalWidth > 0));
  await expect((await page.locator('[data-testid="image-grid"] img').count()) === 3, 'three figures in the grid');
  await shot('view-figures');
  await closeViewer();

  await view('circuit', 'report');
  const frame = page.frameLocator('[data-testid="report-frame"]');
  await frame.locator('img, svg').first().waitFor({ timeout: 10000 });
  await shot('report');
  await closeViewer();

  // Runs: re-run (all cached), reproduce (all recomputed, every digest equal), compare two runs.
  await page.click('[data-testid="runs"]');
  await page.waitForSelector('[data-testid^="run-2"]');
  const firstRun = (await page.getAttribute('[data-testid^="run-2"]', 'data-testid')).slice(4);
  await page.click(`[data-testid="rerun-${firstRun}"]`);
  // The watched run becomes a new one. Its "re-running" message may already be replaced by "run … succeeded" when a
  // run made only of cache hits ends within milliseconds, so the test reads the run, not the message.
  await page.waitForFunction((first) => {
    const info = document.querySelector('[data-testid="run-info"]');
    return info && info.dataset.run !== first && info.dataset.status === 'succeeded';
  }, firstRun, { timeout: 240000 });
  await expect((await page.locator('[data-status="computed"]').count()) === 0, 'a re-run takes every step from the cache');
  await page.click(`[data-testid="reproduce-${firstRun}"]`);
  await page.waitForSelector('[data-testid="reproduction"]', { timeout: 240000 });
  const verdict = await page.textContent('[data-testid="reproduction"]');
  await expect(verdict.includes('output digests equal'), `reproduction verdict: ${verdict}`);
  await shot('reproduced');
  await page.click('[data-testid="runs-refresh"]');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid^="pick-"]').length >= 3);
  const picks = page.locator('[data-testid^="pick-"]');
  await picks.nth(0).check();
  await picks.nth(2).check();
  await page.click('[data-testid="compare"]');
  await page.waitForSelector('[data-testid="compare-view"]');
  await page.selectOption('[data-testid="compare-output"]', 'prune.circuit');
  await page.waitForSelector('[data-testid="compare-left"] [data-testid="circuit-graph"]');
  await page.waitForSelector('[data-testid="compare-right"] [data-testid="circuit-graph"]');
  await shot('compare');
} else if (scenario === 'invalid-connection') {
  await drop('model.train-toy');
  await drop('circuits.prune');
  // While a connection is dragged, the ports that take it light up and the others fade.
  const handle = await page.locator('[data-testid="out-trainToy-model"]').boundingBox();
  await page.mouse.move(handle.x + handle.width / 2, handle.y + handle.height / 2);
  await page.mouse.down();
  await page.mouse.move(handle.x + 200, handle.y + 120, { steps: 5 });
  const target = await page.getAttribute('[data-testid="in-prune-scores"]', 'class');
  await shot('dragging');
  await page.mouse.up();
  await expect(target.includes('incompatible'), `a Scores input fades while a Model is dragged: ${target}`);
  await connect('trainToy', 'model', 'prune', 'scores');
  await page.waitForSelector('[data-testid="message"]:has-text("refused")');
  const message = await page.textContent('[data-testid="message"]');
  await expect(message.includes('is a Model') && message.includes('takes a Scores'), `refusal names both kinds: ${message}`);
  await expect(await waitForEdges(0), 'the refused connection is not drawn');
  // Checkpoint directories are their own kind: they cannot stand in for a model.
  await drop('model.evaluate');
  await connect('trainToy', 'checkpoints', 'evaluate', 'model');
  await page.waitForSelector('[data-testid="message"]:has-text("is a Checkpoints")');
  await expect(await waitForEdges(0), 'checkpoints are not connected to a Model input');
  await shot('refused');
} else if (scenario === 'round-trip') {
  const name = process.env.WORKFLOW;
  await openWorkflow(name);
  await page.waitForTimeout(500);
  await shot('opened');
  const under = await edgesClearOfNodes();
  await expect(under.length === 0, `edges drawn under nodes: ${under.join(', ')}`);
  await page.click('[data-testid="save"]');
  await page.waitForSelector(`[data-testid="message"]:has-text("saved ${name}")`);
  if (process.env.EDIT) {
    // One change: a value, then undo and redo it; only that value may differ in the file.
    await setField(process.env.EDIT_STEP, process.env.EDIT, process.env.EDIT_VALUE);
    await page.click('[data-testid="undo"]');
    await page.click('[data-testid="redo"]');
    await page.click('[data-testid="save"]');
    await page.waitForSelector(`[data-testid="message"]:has-text("saved ${name}")`);
  }
} else if (scenario === 'names-and-prompts') {
  await openWorkflow('data-profile');
  await page.fill('[data-testid="name"]', 'ux-profile');
  await page.click('[data-testid="save"]');
  await page.waitForSelector('[data-testid="message"]:has-text("saved ux-profile")');
  await openWorkflow('quickstart');
  await openWorkflow('ux-profile');
  await expect((await page.inputValue('[data-testid="name"]')) === 'ux-profile', 'the name field shows the saved name');
  // An unsaved edit is never discarded without asking.
  await setField('split', 'trainFraction', 0.6);
  await page.waitForSelector('[data-testid="dirty"]');
  await page.selectOption('[data-testid="open"]', 'quickstart');
  await page.waitForSelector('[data-testid="confirm-dialog"]');
  await shot('unsaved-prompt');
  await page.click('[data-testid="confirm-keep"]');
  await page.waitForSelector('[data-testid="confirm-dialog"]', { state: 'detached' });
  await expect((await page.inputValue('[data-testid="name"]')) === 'ux-profile', 'keeping the edits keeps the workflow');
  // Renaming a step to an existing id is refused where the user sees it.
  const ids = await page.locator('.react-flow__node').evaluateAll((ns) => ns.map((n) => n.dataset.id));
  await select(ids[1]);
  await page.fill('[data-testid="step-id"]', ids[0]);
  await page.press('[data-testid="step-id"]', 'Enter');
  await page.waitForSelector(`[data-testid="message"]:has-text("a step named \\"${ids[0]}\\" exists")`);
  await expect((await page.locator(`[data-testid="node-${ids[1]}"]`).count()) === 1, 'the step keeps its id');
  // Parameters: add one, bind the edited field to it, see it in the run dialog.
  await page.click('.react-flow__pane', { position: { x: 10, y: 10 } });
  await page.fill('[data-testid="new-parameter"]', 'fraction');
  await page.click('[data-testid="add-parameter"]');
  await page.selectOption('[data-testid="parameter-fraction"] select', 'number');
  await page.fill('[data-testid="parameter-fraction-default"]', '0.7');
  await page.press('[data-testid="parameter-fraction-default"]', 'Tab');
  await select('split');
  await page.selectOption('[data-testid="bind-trainFraction"]', 'fraction');
  await page.waitForSelector('[data-testid="bound-trainFraction"]');
  await expect((await page.textContent('[data-testid="values-split"]')).includes('$fraction'), 'the node shows the binding');
  await shot('bound');
  await page.click('[data-testid="save"]');
  await page.waitForSelector('[data-testid="message"]:has-text("saved ux-profile")');
  await page.waitForSelector('[data-testid="dirty"]', { state: 'detached' });
  await page.click('[data-testid="run"]');
  await page.waitForSelector('[data-testid="param-fraction"]');
  await shot('run-dialog');
  await page.keyboard.press('Escape');
  await page.waitForSelector('[data-testid="run-dialog"]', { state: 'detached' });
  // Shortcuts are listed; Esc closes the list.
  await page.click('.react-flow__pane', { position: { x: 10, y: 10 } });
  await page.keyboard.press('?');
  await page.waitForSelector('[data-testid="shortcuts-dialog"]');
  await shot('shortcuts');
  await page.keyboard.press('Escape');
  await page.waitForSelector('[data-testid="shortcuts-dialog"]', { state: 'detached' });
} else if (scenario === 'parameters-and-control') {
  await openWorkflow('mib-circuit');
  await page.click('[data-testid="run"]');
  await page.waitForSelector('[data-testid="run-description"]');
  await expect(await page.isDisabled('[data-testid="run-submit"]'), 'Run waits for the required model');
  await page.fill('[data-testid="param-model"]', process.env.MODEL);
  await page.fill('[data-testid="param-pairs"]', process.env.PAIRS);
  await page.fill('[data-testid="param-heldOut"]', process.env.PAIRS);
  await page.fill('[data-testid="param-limit"]', '0');
  await page.fill('[data-testid="param-igSteps"]', process.env.IG_STEPS ?? '50');
  await shot('dialog');
  await page.dblclick('[data-testid="run-submit"]'); // one run, however fast the clicks
  await page.waitForSelector('[data-testid="run-info"]');
  const runId = await page.getAttribute('[data-testid="run-info"]', 'data-run');
  await page.waitForSelector('[data-testid="status-attribute"][data-status="running"]', { timeout: 120000 });
  await shot('running');
  await page.click('[data-testid="cancel"]');
  await waitForRun('cancelled', 60000);
  await shot('cancelled');
  log(`cancelled ${runId}`);
  await page.click('[data-testid="resume"]');
  await waitForRun('running', 90000);
  await page.waitForSelector('[data-testid="status-attribute"][data-status="running"]', { timeout: 60000 });
  // A reload mid-run comes back to the same run, its canvas and its live statuses.
  await page.reload();
  await page.waitForSelector(`[data-testid="run-info"][data-run="${runId}"]`);
  await page.waitForSelector('[data-testid="node-attribute"]');
  await page.waitForSelector('[data-testid="status-model"]');
  await shot('reloaded');
  log(`reloaded while ${await runStatus()}`);
  await waitForRun('succeeded');
  await expect((await page.getAttribute('[data-testid="status-faithfulness"]', 'data-status')) === 'computed', 'faithfulness computed after the resume');
  await shot('finished');
  await page.click('[data-testid="runs"]');
  await page.waitForSelector(`[data-testid="run-${runId}"]`);
  const rows = await page.locator('[data-testid="runs-list"] tbody tr').count();
  await expect(rows === 1, `one run however the button was clicked, got ${rows}`);
} else if (scenario === 'topics') {
  await openWorkflow('crawl-scripted');
  await runFromDialog();
  await waitForRun('succeeded', 120000);
  await view('crawl', 'topics');
  await page.waitForSelector('[data-testid="topics-table"] tbody tr');
  const all = await page.locator('[data-testid="topics-table"] tbody tr').count();
  await page.check('[data-testid="filter-refused"]');
  const refused = await page.locator('[data-testid="topics-table"] tbody tr').count();
  const pills = await page.locator('[data-testid="topics-table"] tbody tr .s-failed').count();
  await expect(refused > 0 && refused < all && pills === refused, `refused filter: ${all} topics, ${refused} refused rows, ${pills} marked`);
  await page.fill('[data-testid="topics-search"]', 'malware');
  const found = await page.locator('[data-testid="topics-table"] tbody tr').allTextContents();
  await expect(found.length >= 1 && found.length < refused && found.every((t) => t.includes('malware')), `searching narrows to the matching topics: ${found.join(' | ')}`);
  await shot('topics');
}
} catch (e) {
  await fail(e.message);
}
await expect(problems.length === 0, problems.join('; '));
console.log(`PASS ${scenario}`);
await browser.close();
