// Plays an HLS URL with hls.js in headless Chromium, from a different origin (so CORS is exercised),
// and exits 0 only if playback advanced by the wanted seconds with a decoded picture and no fatal error.
// With `ended` instead of seconds, it exits 0 only if the video plays to its end (the `ended` event: a
// playlist closed with EXT-X-ENDLIST) instead of waiting for more.
// Usage: node play.mjs <playlist-url> [seconds|ended] [chromium-path]
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';

const [url, secondsArg, chromiumPath] = process.argv.slice(2);
const untilEnded = secondsArg === 'ended';
const seconds = untilEnded ? 0 : Number(secondsArg ?? 4);
const hlsJs = fileURLToPath(new URL('./node_modules/hls.js/dist/hls.min.js', import.meta.url));
// The page comes from its own server on loopback: another origin than the media server (so CORS applies),
// in the same address space (so Chromium's local-network rules do not interfere).
const pageServer = createServer((_, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><video id="v" muted autoplay playsinline></video>');
});
await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${pageServer.address().port}`;

const browser = await chromium.launch({
  executablePath: chromiumPath ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
let code = 1;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`console.${m.type()}: ${m.text()}`));
  await page.goto(`${origin}/`);
  await page.addScriptTag({ path: hlsJs });
  const supported = await page.evaluate((src) => {
    window.result = { errors: [], fatal: null };
    if (!Hls.isSupported()) return false;
    const v = document.getElementById('v');
    const hls = new Hls();
    hls.on(Hls.Events.ERROR, (_, d) => {
      window.result.errors.push(`${d.type}/${d.details}`);
      if (d.fatal) window.result.fatal = `${d.type}/${d.details}`;
    });
    hls.loadSource(src);
    hls.attachMedia(v);
    v.play().catch(() => {});
    return true;
  }, url);
  if (!supported) throw new Error('hls.js reports MSE/H.264 unsupported in this browser');
  await page.waitForFunction(
    ([s, ended]) => {
      const v = document.getElementById('v');
      return (ended ? v.ended : v.currentTime >= s) || window.result.fatal !== null;
    },
    [seconds, untilEnded], { timeout: 60000, polling: 200 });
  const r = await page.evaluate(() => {
    const v = document.getElementById('v');
    return { ...window.result, currentTime: v.currentTime, ended: v.ended, width: v.videoWidth, height: v.videoHeight };
  });
  console.log(JSON.stringify(r));
  const advanced = untilEnded ? r.ended && r.currentTime > 0 : r.currentTime >= seconds;
  code = r.fatal === null && advanced && r.width > 0 ? 0 : 1;
} catch (e) {
  console.error(`browser test failed: ${e.message}`);
} finally {
  await browser.close();
  pageServer.close();
}
process.exit(code);
