// Browser tests of the designer: Debian's Chromium, headless, driven by playwright-core, against a real
// `pipelines serve`. Called by the C# integration tests (DesignerTests) with: node designer.mjs SCENARIO URL KEY OUTDIR
import { chromium } from 'playwright-core';

const [scenario, url, key, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const problems = [];
page.on('pageerror', (e) => problems.push(e.message));
const shot = (name) => page.screenshot({ path: `${out}/${scenario}-${name}.png` });
const fail = async (message) => { await shot('failure'); console.error(`FAIL: ${message}`); await browser.close(); process.exit(1); };
const expect = async (condition, message) => { if (!(await condition)) await fail(message); };

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
async function setField(step, field, value) {
  await page.click(`[data-testid="node-${step}"] .step-title`);
  await page.fill(`[data-testid="field-${field}"]`, String(value));
  await page.press(`[data-testid="field-${field}"]`, 'Tab');
}
const edgeCount = () => page.locator('[data-testid^="rf__edge-"]').count();
async function waitForEdges(n) {
  for (let k = 0; k < 50 && (await edgeCount()) !== n; k++) await page.waitForTimeout(100);
  return (await edgeCount()) === n;
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
  await page.click('[data-testid="node-toyTask"] .step-title');
  await page.waitForSelector('[data-testid="error-count"]');
  await shot('invalid-field');
  await setField('toyTask', 'count', 24);
  await page.fill('[data-testid="name"]', 'designed');
  await page.click('[data-testid="save"]');
  await page.waitForSelector('[data-testid="message"]:has-text("saved designed")');
  await page.click('[data-testid="validate"]');
  await page.waitForSelector('[data-testid="message"]:has-text("valid")');
  await page.click('[data-testid="run"]');
  await page.waitForSelector('[data-testid="status-circuit"][data-status="computed"], [data-testid="status-circuit"][data-status="cached"], [data-status="failed"]', { timeout: 240000 });
  await expect((await page.locator('[data-status="failed"]').count()) === 0, 'no step may fail');
  await shot('ran');
  await page.click('[data-testid="node-circuit"] .step-title');
  await page.click('[data-testid="view-report"]');
  const frame = page.frameLocator('[data-testid="report-frame"]');
  await frame.locator('text=Toy').first().waitFor({ timeout: 10000 }).catch(() => {});
  await frame.locator('img, svg').first().waitFor({ timeout: 10000 });
  await shot('report');
  // The runs view lists the run.
  await page.click('[data-testid="viewer"] button');
  await page.click('[data-testid="runs"]');
  await page.waitForSelector('[data-testid^="run-"]');
  await shot('runs');
} else if (scenario === 'invalid-connection') {
  await drop('model.train-toy');
  await drop('circuits.prune');
  await connect('trainToy', 'model', 'prune', 'scores');
  await page.waitForSelector('[data-testid="message"]:has-text("refused")');
  const message = await page.textContent('[data-testid="message"]');
  await expect(message.includes('is a Model') && message.includes('takes a Scores'), `refusal names both kinds: ${message}`);
  await expect(await waitForEdges(0), 'the refused connection is not drawn');
  await shot('refused');
} else if (scenario === 'round-trip') {
  const name = process.env.WORKFLOW;
  await page.selectOption('[data-testid="open"]', name);
  await page.waitForSelector('[data-testid="message"]:has-text("opened")');
  await page.waitForSelector('.react-flow__node');
  await shot('opened');
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
}
} catch (e) {
  await fail(e.message);
}
await expect(problems.length === 0, `page errors: ${problems.join('; ')}`);
console.log(`PASS ${scenario}`);
await browser.close();
