'use strict';
// boltpipe's web page: the cluster's live state (Server-Sent Events from /ui/events) and a chat
// through the coordinator's OpenAI API. Nothing is fetched from anywhere but the coordinator.

const $ = (id) => document.getElementById(id);
const SVG_NS = 'http://www.w3.org/2000/svg';
const KEY_STORE = 'boltpipe.apiKey';
const SAMPLES = 60;                                       // points kept per chart
const COLORS = { p50: '#2563eb', p95: '#ea580c', tps: '#16a34a' };
const KINDS = ['thunderbolt', 'ethernet', 'wifi', 'loopback', 'other'];
const BOX = { w: 200, h: 96, gapX: 150, gapY: 50, pad: 10 };
const DASH = '\u2013', DOT = ' \u00b7 ', ELLIPSIS = '\u2026';

let state = null;                 // the latest snapshot
let ring = null;                  // the SVG's elements, rebuilt only when the ring changes
let cards = null;                 // the node cards' elements, likewise
const samples = new Map();        // node name -> [{p50, p95, tps}], the charts' history
const chat = { history: [], controller: null };

// ---- formatting -------------------------------------------------------------------------------

const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const fixed = (v, digits = 1) => (isNum(v) ? v.toFixed(digits) : DASH);
const gb = (v) => (isNum(v) ? (v / 1e9).toFixed(1) : DASH);
const clip = (s, n) => { s = String(s ?? ''); return s.length > n ? s.slice(0, n - 1) + ELLIPSIS : s; };
const layersText = (n) => `layers ${n.layers[0]}${DASH}${n.layers[1]}`;
const memoryText = (n) => `${gb(n.memory_used_bytes)} / ${gb(n.memory_limit_bytes)} GB`;
const linkText = (l) => l.kind + (isNum(l.hop_ms) ? `${DOT}${Number(l.hop_ms.toPrecision(2))} ms` : '');

function bytes(v) {
  if (!isNum(v)) return DASH;
  let i = 0;
  for (; v >= 1000 && i < 4; i++) v /= 1000;
  return `${i ? v.toFixed(1) : v} ${['B', 'KB', 'MB', 'GB', 'TB'][i]}`;
}

// ---- DOM helpers ------------------------------------------------------------------------------

function el(tag, attrs = {}, parent = null, ns = null) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
const svgEl = (tag, attrs, parent) => el(tag, attrs, parent, SVG_NS);
const setText = (e, text) => { if (e.textContent !== String(text)) e.textContent = text; };

// ---- header and figures strip -----------------------------------------------------------------

function renderHeader(s) {
  const r = s.requests;
  [['model', s.model], ['running', r.running], ['max-running', r.max_running], ['waiting', r.waiting],
   ['context', s.context_length]].forEach(([id, v]) => setText($(id), v));
}

function renderFigures(s) {
  const items = [];
  const pc = s.prefix_cache, sp = s.speculation;
  if (pc) {
    const asked = pc.hits + pc.misses;
    const share = asked ? `${Math.round((100 * pc.hits) / asked)}% (${pc.hits} / ${asked})` : DASH;
    items.push(['prefix cache hits', share], ['reused', `${pc.tokens_reused} tokens`],
               ['cached', `${pc.entries} entries${DOT}${bytes(pc.bytes)}`]);
  }
  if (sp) {
    const rate = sp.drafted ? ` (${Math.round((100 * sp.accepted) / sp.drafted)}%)` : '';
    items.push([`speculation (${sp.drafter})`, `${sp.accepted} / ${sp.drafted} accepted${rate}`]);
  }
  const root = $('figures');
  root.hidden = items.length === 0;
  root.replaceChildren(...items.map(([label, value]) => {
    const item = el('div', { class: 'figure' });
    el('span', { class: 'label', text: label }, item);
    el('b', { text: value }, item);
    return item;
  }));
}

// ---- the ring (inline SVG) --------------------------------------------------------------------

// Boxes clockwise round a racetrack: the top row left to right, the bottom row right to left.
function ringPositions(count) {
  const top = count <= 2 ? count : Math.ceil(count / 2), bottom = count - top;
  const colW = BOX.w + BOX.gapX, shift = top > bottom && bottom > 0 ? colW / 2 : 0;
  return Array.from({ length: count }, (_, i) => {
    const row = i < top ? 0 : 1;
    const col = row === 0 ? i : bottom - 1 - (i - top);
    return { x: BOX.pad + col * colW + row * shift, y: BOX.pad + row * (BOX.h + BOX.gapY) };
  });
}

const ringSignature = (s) => JSON.stringify([s.nodes.map((n) => n.name), s.links.map((l) => [l.from, l.to])]);

function buildRing(s, sig) {
  const svg = $('ring');
  svg.replaceChildren();
  const names = ['coordinator', ...s.nodes.map((n) => n.name)];
  const pos = ringPositions(names.length);
  const width = Math.max(...pos.map((p) => p.x)) + BOX.w + BOX.pad;
  const height = Math.max(...pos.map((p) => p.y)) + BOX.h + BOX.pad;
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.style.maxWidth = `${Math.round(width * 1.15)}px`;            // small rings are not blown up
  const marker = svgEl('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5',
    markerWidth: '6', markerHeight: '6', orient: 'auto' }, svgEl('defs', {}, svg));
  svgEl('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrow-head' }, marker);
  const linkLayer = svgEl('g', { class: 'links' }, svg);
  const boxLayer = svgEl('g', { class: 'boxes' }, svg);
  const index = new Map(names.map((n, i) => [n, i]));
  const pairs = new Set(s.links.map((l) => `${l.from}>${l.to}`));
  const links = s.links.map((l) => {
    const a = pos[index.get(l.from)], b = pos[index.get(l.to)];
    if (!a || !b) return null;
    return buildLink(linkLayer, a, b, pairs.has(`${l.to}>${l.from}`) ? 16 : 0);
  });
  const boxes = names.map((name, i) => buildBox(boxLayer, name, pos[i], i === 0));
  ring = { sig, boxes, links };
}

function buildBox(layer, name, p, isCoordinator) {
  const g = svgEl('g', { class: isCoordinator ? 'box coord' : 'box', transform: `translate(${p.x},${p.y})` }, layer);
  if (!isCoordinator) { g.setAttribute('data-node', name); g.setAttribute('data-up', 'true'); }
  const title = svgEl('title', {}, g);
  svgEl('rect', { width: BOX.w, height: BOX.h, rx: 8 }, g);
  const classes = ['name', 'sub', 'sub', 'sub', 'why'];
  const lines = classes.map((cls, i) => svgEl('text', { x: 10, y: 19 + i * 17, class: cls }, g));
  return { g, title, lines };
}

// A straight arrow between two boxes' borders (offset sideways when the reverse link exists too).
function buildLink(layer, a, b, offset) {
  const ca = { x: a.x + BOX.w / 2, y: a.y + BOX.h / 2 }, cb = { x: b.x + BOX.w / 2, y: b.y + BOX.h / 2 };
  const len = Math.hypot(cb.x - ca.x, cb.y - ca.y) || 1;
  const dx = (cb.x - ca.x) / len, dy = (cb.y - ca.y) / len;
  const reach = Math.min(BOX.w / 2 / Math.max(Math.abs(dx), 1e-6), BOX.h / 2 / Math.max(Math.abs(dy), 1e-6)) + 3;
  const ox = -dy * offset, oy = dx * offset;
  const x1 = ca.x + ox + dx * reach, y1 = ca.y + oy + dy * reach;
  const x2 = cb.x + ox - dx * reach, y2 = cb.y + oy - dy * reach;
  const g = svgEl('g', { class: 'link' }, layer);
  svgEl('line', { x1, y1, x2, y2, 'marker-end': 'url(#arrow)' }, g);
  const mx = (x1 + x2) / 2, my = (y1 + y2) / 2;
  const bg = svgEl('rect', { x: mx, y: my - 9, width: 0, height: 18, rx: 4, class: 'label-bg' }, g);
  const label = svgEl('text', { x: mx, y: my + 4, 'text-anchor': 'middle', class: 'label' }, g);
  return { g, bg, label, mx };
}

function setLines(box, texts) { texts.forEach((t, i) => setText(box.lines[i], t)); }

function updateRing(s) {
  const sig = ringSignature(s);
  if (!ring || ring.sig !== sig) buildRing(s, sig);
  const [coord, ...boxes] = ring.boxes;
  const r = s.requests;
  setLines(coord, ['coordinator', clip(s.model, 28), `running ${r.running} / ${r.max_running}`,
                   `waiting ${r.waiting}`, `context ${s.context_length}`]);
  const down = new Set(s.nodes.filter((n) => !n.up).map((n) => n.name));
  s.nodes.forEach((n, i) => {
    const box = boxes[i];
    box.g.setAttribute('data-up', String(n.up));
    box.g.classList.toggle('down', !n.up);
    setLines(box, [n.up ? n.name : `${n.name}${DOT}down`, clip(n.machine, 27), `${n.backend}${DOT}${layersText(n)}`,
                   `${memoryText(n)}${DOT}${n.sessions ?? DASH} sessions`,
                   n.up ? n.host : clip(n.why_down || 'not answering', 28)]);
    setText(box.title, `${n.name} (${n.host})\n${n.machine}` + (n.up ? '' : `\ndown: ${n.why_down}`));
  });
  s.links.forEach((l, i) => {
    const link = ring.links[i];
    if (!link) return;
    link.g.setAttribute('class', `link kind-${KINDS.includes(l.kind) ? l.kind : 'other'}`);
    link.g.classList.toggle('broken', down.has(l.from) || down.has(l.to));
    setText(link.label, linkText(l));
    const w = link.label.getComputedTextLength() || link.label.textContent.length * 6.5;
    link.bg.setAttribute('x', link.mx - w / 2 - 5);
    link.bg.setAttribute('width', w + 10);
  });
}

// ---- node cards and their charts --------------------------------------------------------------

function buildCards(s, sig) {
  const root = $('cards'), byName = new Map();
  root.replaceChildren();
  for (const n of s.nodes) {
    const card = el('article', { class: 'card', 'data-node': n.name, 'data-up': 'true' }, root);
    const fields = {};
    const field = (name, parent, tag = 'span') =>
      (fields[name] = el(tag, { 'data-field': name, class: name }, parent));
    const head = el('header', {}, card);
    el('h3', { text: n.name }, head);
    field('status', head);
    const where = el('div', { class: 'where' }, card);
    field('layers', where);
    field('backend', where);
    field('why', card, 'div');
    const nums = el('div', { class: 'nums' }, card);
    for (const [name, unit] of [['p50', 'p50 ms'], ['p95', 'p95 ms'], ['tps', 'tokens/s']]) {
      const num = el('div', { class: 'num' }, nums);
      field(name, num, 'b');
      el('span', { text: unit }, num);
    }
    const latency = chartBlock(card, 'decode latency, ms', [['p50', COLORS.p50], ['p95', COLORS.p95]]);
    const speed = chartBlock(card, 'tokens/s', [['tokens/s', COLORS.tps]]);
    field('facts', card, 'div');
    byName.set(n.name, { card, fields, latency, speed });
  }
  cards = { sig, byName };
}

function chartBlock(card, caption, legend) {
  const cap = el('div', { class: 'chart-caption' }, card);
  el('span', { text: caption }, cap);
  for (const [name, color] of legend) {
    const item = el('span', { class: 'legend' }, cap);
    el('i', { class: 'swatch', style: `background:${color}` }, item);
    item.append(name);
  }
  return el('canvas', { class: 'chart', height: '36' }, card);
}

function updateCards(s) {
  const sig = JSON.stringify(s.nodes.map((n) => n.name));
  if (!cards || cards.sig !== sig) buildCards(s, sig);
  for (const n of s.nodes) {
    const { card, fields, latency, speed } = cards.byName.get(n.name);
    card.setAttribute('data-up', String(n.up));
    setText(fields.status, n.up ? 'up' : 'down');
    setText(fields.layers, layersText(n));
    setText(fields.backend, `${DOT}${n.backend}${DOT}${n.host}`);
    setText(fields.why, n.up ? '' : n.why_down || 'not answering');
    fields.why.hidden = n.up;
    setText(fields.p50, fixed(n.decode_p50_ms));
    setText(fields.p95, fixed(n.decode_p95_ms));
    setText(fields.tps, fixed(n.tokens_per_s));
    setText(fields.facts, [`batch ${fixed(n.batch, 2)}`, `KV ${bytes(n.kv_bytes)}`,
                           `prefix ${bytes(n.prefix_bytes)}`].join(DOT));
    const points = samples.get(n.name) || [];
    drawChart(latency, [{ color: COLORS.p50, values: points.map((p) => p.p50) },
                        { color: COLORS.p95, values: points.map((p) => p.p95) }]);
    drawChart(speed, [{ color: COLORS.tps, values: points.map((p) => p.tps) }]);
  }
}

function recordSamples(s) {
  for (const name of [...samples.keys()]) if (!s.nodes.some((n) => n.name === name)) samples.delete(name);
  for (const n of s.nodes) {
    const points = samples.get(n.name) || [];
    points.push({ p50: n.decode_p50_ms, p95: n.decode_p95_ms, tps: n.tokens_per_s });
    if (points.length > SAMPLES) points.shift();
    samples.set(n.name, points);
  }
}

// The chart's top: a round number just above the largest value.
function niceMax(v) {
  const p = v > 0 ? 10 ** Math.floor(Math.log10(v)) : 1;
  return [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * p).find((m) => v <= m);
}

// A small line chart: the newest sample at the right edge, gaps where a value is missing.
function drawChart(canvas, series) {
  const dpr = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  const size = { width: Math.round(w * dpr), height: Math.round(h * dpr) };
  if (canvas.width !== size.width || canvas.height !== size.height) Object.assign(canvas, size);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const values = series.flatMap((s) => s.values).filter(isNum);
  const top = niceMax(Math.max(0, ...values)), y = (v) => h - 2 - (v / top) * (h - 6);
  Object.assign(ctx, { strokeStyle: '#e5e7eb', lineWidth: 1 });
  for (const v of [0, top / 2, top]) {
    ctx.beginPath(); ctx.moveTo(0, Math.round(y(v)) + 0.5); ctx.lineTo(w, Math.round(y(v)) + 0.5); ctx.stroke();
  }
  Object.assign(ctx, { fillStyle: '#6b7280', font: '10px system-ui, sans-serif' });
  ctx.fillText(values.length ? String(Number(top.toPrecision(3))) : 'no figures yet', 3, 11);
  const step = (w - 2) / (SAMPLES - 1);
  for (const s of series) {
    Object.assign(ctx, { strokeStyle: s.color, lineWidth: 1.5 });
    ctx.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (!isNum(v)) { drawing = false; return; }
      const x = w - 1 - (s.values.length - 1 - i) * step;
      if (drawing) ctx.lineTo(x, y(v)); else ctx.moveTo(x, y(v));
      drawing = true;
    });
    ctx.stroke();
  }
}

// ---- live state -------------------------------------------------------------------------------

function apply(s) {
  state = s;
  renderHeader(s);
  recordSamples(s);
  updateRing(s);
  updateCards(s);
  renderFigures(s);
  if (needKey() && $('api-key-form').hidden) askKey('');
  if (!s.api_key_required) $('api-key-form').hidden = true;
}

function setConnected(ok) { $('connection').hidden = ok; $('main').classList.toggle('stale', !ok); }

function connect() {
  const source = new EventSource('/ui/events');
  source.onopen = () => setConnected(true);
  source.onmessage = (e) => {
    setConnected(true);
    try { apply(JSON.parse(e.data)); } catch (err) { console.debug('bad snapshot', err); }
  };
  source.onerror = () => {
    setConnected(false);
    if (source.readyState === EventSource.CLOSED) { source.close(); setTimeout(connect, 3000); }
  };
}

// ---- the API key ------------------------------------------------------------------------------

const storedKey = () => sessionStorage.getItem(KEY_STORE) || '';
const needKey = () => Boolean(state && state.api_key_required && !storedKey());

function askKey(note) {
  $('api-key-form').hidden = false;
  setText($('api-key-note'), note || 'Kept in this browser tab only (session storage).');
  $('api-key').focus();
}

function onKeySubmit(e) {
  e.preventDefault();
  const key = $('api-key').value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $('api-key').value = '';
  $('api-key-form').hidden = true;
  $('prompt').focus();
}

// ---- chat -------------------------------------------------------------------------------------

function follow(force = false) {
  const box = $('messages');
  if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
}

function addTurn(role, text) {
  const box = $('messages');
  box.querySelector('.empty')?.remove();
  const turn = el('div', { class: `turn ${role}` }, box);
  el('div', { class: 'role', text: role === 'user' ? 'You' : 'Assistant' }, turn);
  const msg = el('div', { class: 'message', 'data-role': role }, turn);
  msg.textContent = text;
  follow(true);
  return { turn, msg };
}

function addNote(turn, text) { el('div', { class: 'meta', text }, turn); follow(); }

function addNotice(text) { el('div', { class: 'notice', role: 'alert', text }, $('messages')); follow(true); }

function requestBody(messages) {
  const t = parseFloat($('temperature').value), n = parseInt($('max-tokens').value, 10);
  return { model: state.model, messages, stream: true,
           temperature: Number.isFinite(t) ? t : 0.7, max_tokens: n >= 1 ? n : 256 };
}

function requestHeaders() {
  const headers = { 'Content-Type': 'application/json', Accept: 'text/event-stream' };
  if (storedKey()) headers.Authorization = `Bearer ${storedKey()}`;
  return headers;
}

async function responseError(res) {
  let message = `HTTP ${res.status} ${res.statusText}`;
  try { message = (await res.json()).error.message || message; } catch (_) { /* not JSON */ }
  return Object.assign(new Error(message), { status: res.status });
}

// Reads the OpenAI stream (`data: {...}` lines, `data: [DONE]` last); returns the finish reason.
async function readStream(res, onText) {
  const reader = res.body.getReader(), decoder = new TextDecoder();
  let buffer = '', finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    buffer += value ? decoder.decode(value, { stream: true }) : decoder.decode();
    const lines = buffer.split('\n');
    buffer = done ? '' : lines.pop();
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      if (!line.startsWith('data:')) continue;
      const data = line.slice(5).trim();
      if (data === '[DONE]') return finish;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || 'the stream failed');
      const choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && choice.delta.content) onText(choice.delta.content);
      if (choice && choice.finish_reason) finish = choice.finish_reason;
    }
    if (done) return finish;
  }
}

function setBusy(busy) { $('send').disabled = busy; $('stop').disabled = !busy; }

async function send() {
  const text = $('prompt').value;
  if (!text.trim() || chat.controller) return;
  if (!state) { addNotice('Waiting for the cluster\u2019s state, try again in a moment.'); return; }
  if (needKey()) { askKey('Enter the API key first.'); return; }
  $('prompt').value = '';
  const conversation = chat.history;
  const user = addTurn('user', text);
  conversation.push({ role: 'user', content: text });
  const answer = addTurn('assistant', '');
  answer.msg.setAttribute('data-streaming', 'true');
  const controller = (chat.controller = new AbortController());
  setBusy(true);
  let reply = '', finish = null, failure = null, stopped = false;
  try {
    const res = await fetch('/v1/chat/completions', { method: 'POST', headers: requestHeaders(),
      body: JSON.stringify(requestBody(conversation.slice())), signal: controller.signal });
    if (!res.ok) throw await responseError(res);
    finish = await readStream(res, (piece) => { reply += piece; answer.msg.textContent = reply; follow(); });
  } catch (err) {
    if (err.name === 'AbortError') stopped = true; else failure = err;
  }
  answer.msg.setAttribute('data-streaming', 'false');
  if (chat.controller === controller) { chat.controller = null; setBusy(false); }
  if (conversation !== chat.history) return;          // "New chat" was pressed meanwhile
  endTurn(conversation, user, answer, reply, { finish, failure, stopped, text });
}

function endTurn(conversation, user, answer, reply, { finish, failure, stopped, text }) {
  if (reply || (!failure && !stopped)) {
    conversation.push({ role: 'assistant', content: reply });
    if (stopped) addNote(answer.turn, 'stopped');
    else if (finish === 'length') addNote(answer.turn, 'cut at max tokens');
  } else {                                               // nothing came: the question was not answered
    answer.turn.remove();
    conversation.pop();
    user.turn.classList.add('failed');
    addNote(user.turn, 'not answered, not kept in the conversation');
    if (!$('prompt').value) $('prompt').value = text;
  }
  if (failure) addNotice(failure.message);
  if (failure && failure.status === 401) {                // a wrong or stale key: forget it and ask again
    sessionStorage.removeItem(KEY_STORE);
    askKey(`The key was refused: ${failure.message}`);
  }
}

function newChat() {
  const controller = chat.controller;
  Object.assign(chat, { history: [], controller: null });
  setBusy(false);
  if (controller) controller.abort();
  $('messages').replaceChildren(el('p', { class: 'empty', text: 'Ask the cluster something.' }));
  $('prompt').focus();
}

// ---- start ------------------------------------------------------------------------------------

function start() {
  $('send').addEventListener('click', send);
  $('stop').addEventListener('click', () => chat.controller && chat.controller.abort());
  $('new-chat').addEventListener('click', newChat);
  $('api-key-form').addEventListener('submit', onKeySubmit);
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  window.addEventListener('resize', () => state && updateCards(state));
  fetch('/ui/state').then((r) => (r.ok ? r.json() : null)).then((s) => s && !state && apply(s)).catch(() => {});
  connect();
}

start();
