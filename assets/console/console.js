// The livechannel web console: polls /console/api/overview and renders buckets, channels, live stats,
// a bitrate sparkline per live channel, copy-paste publish settings and an hls.js player.
'use strict';
const state = { auth: sessionStorage.getItem('lc-auth'), history: new Map(), playing: null, hls: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const headers = state.auth ? { Authorization: `Basic ${state.auth}` } : {};
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) { signOut(); throw new Error('sign-in refused'); }
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${await resp.text()}`);
  return resp.status === 204 ? null : resp.json();
}

function kbps(bytesPerSecond) { return `${Math.round(bytesPerSecond * 8 / 1000)} kbit/s`; }

function sparkline(samples) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 120 24');
  const max = Math.max(1, ...samples);
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  const step = 120 / Math.max(1, samples.length - 1);
  line.setAttribute('points', samples.map((v, i) => `${i * step},${23 - (v / max) * 22}`).join(' '));
  svg.append(line);
  return svg;
}

function liveCells(c, key) {
  const l = c.live;
  if (!l) return [el('td', {}, '–'), el('td', {}, '–'), el('td', {}, '–')];
  const v = l.video, a = l.audio, s = l.segments;
  const total = (v ? v.bandwidth : 0) + (a ? a.bandwidth : 0);
  const h = state.history.get(key) || [];
  h.push(total); if (h.length > 60) h.shift();
  state.history.set(key, h);
  const picture = v ? `${v.width}×${v.height} @ ${v.frame_rate} fps, ${kbps(v.bandwidth)}` : 'no video';
  const sound = a ? `${a.sample_rate} Hz, ${kbps(a.bandwidth)}` : 'no audio';
  const segLen = s.last_ms ? (s.last_ms / 1000).toFixed(1) : '–';
  const long = s.last_ms > c.frag_duration * 1000 * 1.5;
  const lost = s.failed + s.dropped;
  return [
    el('td', {}, `${picture}; ${sound}`, el('br'), `from ${l.remote} on ${l.node}`),
    el('td', {}, el('span', { class: long ? 'warn' : '' }, `${segLen} s / ${c.frag_duration} s`),
      el('br'), `${s.stored} stored`, lost ? el('span', { class: 'warn' }, `, ${lost} lost`) : null,
      s.forced ? el('span', { class: 'warn' }, `, ${s.forced} force-cut`) : null),
    el('td', {}, sparkline(h), el('br'), kbps(total)),
  ];
}

function channelRow(o, b, c) {
  const key = `${b.name}/${c.name}`;
  const actions = el('td', {}, el('button', { onclick: () => play(key, c.playback) }, 'Play'));
  if (o.signed_in) {
    const next = c.status === 'disabled' ? 'enabled' : 'disabled';
    actions.append(' ', el('button', { onclick: () => setStatus(b.name, c.name, next) }, next === 'enabled' ? 'Enable' : 'Disable'));
  }
  const obs = `Server: ${c.publish.server}\nStream key: ${c.publish.key}\nKeyframe interval: ${c.frag_duration} s\n`
    + `ffmpeg: ffmpeg -re -i INPUT -c:v libx264 -g ${c.frag_duration * 30} -keyint_min ${c.frag_duration * 30} `
    + `-sc_threshold 0 -c:a aac -f flv "${c.publish.server}/${c.publish.key}"\nPlayback: ${c.playback}`;
  return el('tr', { 'data-channel': key },
    el('td', {}, el('strong', {}, c.name), el('details', {}, el('summary', {}, 'Publish settings'), el('pre', {}, obs))),
    el('td', {}, el('span', { class: `status ${c.status}` }, c.status)),
    ...liveCells(c, key),
    actions);
}

function render(o) {
  $('node').textContent = `node ${o.node}`;
  $('signin').hidden = o.signed_in || !o.can_sign_in;
  $('signout').hidden = !o.signed_in;
  const root = $('buckets');
  root.replaceChildren();
  for (const b of o.buckets) {
    const rows = b.channels.map((c) => channelRow(o, b, c));
    root.append(el('h2', {}, `${b.name} `, el('small', {}, `(${b.acl}${b.more ? `, first ${b.channels.length} channels` : ''})`)),
      rows.length ? el('table', {},
        el('thead', {}, el('tr', {}, ...['Channel', 'Status', 'Stream', 'Segments', 'Bitrate', ''].map((t) => el('th', {}, t)))),
        el('tbody', {}, ...rows)) : el('p', {}, 'No channels yet: push to create one (see the README).'));
  }
  if (!o.buckets.length) root.append(el('p', {}, 'No bucket is visible without signing in.'));
}

async function refresh() {
  try {
    render(await api('/console/api/overview'));
    $('error').hidden = true;
  } catch (e) {
    $('error').textContent = e.message;
    $('error').hidden = false;
  }
}

async function setStatus(bucket, channel, status) {
  await api(`/console/api/channels/${encodeURIComponent(bucket)}/${encodeURIComponent(channel)}?status=${status}`, { method: 'POST' });
  refresh();
}

function play(key, url) {
  $('player').hidden = false;
  $('player-title').textContent = key;
  const video = $('video');
  if (state.hls) { state.hls.destroy(); state.hls = null; }
  if (window.Hls && Hls.isSupported()) {
    state.hls = new Hls();
    state.hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) $('player-status').textContent = `player error: ${d.details}`; });
    state.hls.loadSource(url);
    state.hls.attachMedia(video);
  } else {
    video.src = url; // Safari plays HLS itself
  }
  video.play().catch(() => {});
  state.playing = key;
}

function signOut() {
  state.auth = null;
  sessionStorage.removeItem('lc-auth');
}

$('signin').addEventListener('submit', (e) => {
  e.preventDefault();
  state.auth = btoa(`${$('user').value}:${$('password').value}`);
  sessionStorage.setItem('lc-auth', state.auth);
  refresh();
});
$('signout').addEventListener('click', () => { signOut(); refresh(); });
refresh();
setInterval(refresh, 2000);
