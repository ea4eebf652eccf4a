// Opens the livechannel web console in headless Chromium, waits until it lists the wanted channel as
// live, plays it with the console's own player, saves a screenshot, and exits 0 only if frames were
// decoded and the page logged no error.
// Usage: node console.mjs <console-url> <bucket/channel> <screenshot.png> [chromium-path]
import { chromium } from 'playwright-core';

const [url, channel, screenshot, chromiumPath] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: chromiumPath ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
const errors = [];
let code = 1;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console.error: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  await page.goto(url);
  const row = page.locator(`tr[data-channel="${channel}"]`);
  await row.locator('.status.live').waitFor({ timeout: 20000 });
  const listed = await row.innerText();
  await row.getByRole('button', { name: 'Play' }).click();
  await page.waitForFunction(() => {
    const v = document.getElementById('video');
    return v.getVideoPlaybackQuality().totalVideoFrames > 10 && v.currentTime > 1;
  }, null, { timeout: 30000, polling: 200 });
  // Two more polls, so the sparkline has points.
  await page.waitForTimeout(4500);
  await page.screenshot({ path: screenshot, fullPage: true });
  const r = await page.evaluate(() => {
    const v = document.getElementById('video');
    return { frames: v.getVideoPlaybackQuality().totalVideoFrames, width: v.videoWidth, currentTime: v.currentTime,
      sparkPoints: document.querySelector('svg.spark polyline')?.getAttribute('points')?.split(' ').length ?? 0 };
  });
  console.log(JSON.stringify({ ...r, listed, errors }));
  code = errors.length === 0 && r.frames > 0 && r.width > 0 ? 0 : 1;
} catch (e) {
  console.error(`console test failed: ${e.message}; errors: ${JSON.stringify(errors)}`);
} finally {
  await browser.close();
}
process.exit(code);
