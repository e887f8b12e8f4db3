// Topology: the mesh as this node knows it (every node's announced links) with this node's paths on it. A link that
// goes down, or that both ends stop announcing, stays drawn — vermillion and dashed — so a cut is seen. Pan by dragging,
// zoom with the wheel or the buttons; click (or Tab to and press Enter on) a node or a link for its details and tools;
// open a path by clicking its hops in order.

import {
  h, s, api, act, addr, badge, copyText, fill, fmtLoss, fmtMicros, fmtMs, fmtPrice, fmtInt, load, notice, setText, shortAddr,
  state, timespanMs, unavailable, invalidate,
} from './core.js';
import { ForceLayout, SMALL } from './layout.js';
import { ping, traceroute, openPath, pathSummary } from './tools.js';

const K = 60; // ideal link length in map units
const NODE_R = 7;
const SELF_R = 10;
const FAR_R = 4.5;

function fresh() {
  return {
    pos: new Map(),
    seenEdges: new Map(),
    seenRecords: new Set(),
    layout: new ForceLayout(K),
    layoutSig: '',
    view: { x: 0, y: 0, k: 1 },
    userMoved: false,
    selected: null,
    pick: { on: false, hops: [] },
    extraPath: null,
    pickResult: null,
  };
}

let T = fresh();
let model = null;
let els = null;
let frame = 0;
let drawnScale = '';

export function edgeKey(a, b) {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// The model: nodes and edges from the announcements, this node's links and paths, and what was seen before

function buildModel() {
  const self = state.data.node?.address ?? null;
  const mesh = Array.isArray(state.data.mesh) ? state.data.mesh : [];
  const links = Array.isArray(state.data.links) ? state.data.links : null;
  const paths = Array.isArray(state.data.paths) ? state.data.paths : [];
  const blocked = new Set(Array.isArray(state.data.blocks) ? state.data.blocks : []);
  const nodes = new Map();
  const edges = new Map();
  const node = (a) => {
    let n = nodes.get(a);
    if (!n) {
      n = { address: a, record: null, dist: Infinity, onPath: false };
      nodes.set(a, n);
    }
    return n;
  };
  const edge = (a, b) => {
    const key = edgeKey(a, b);
    let e = edges.get(key);
    if (!e) {
      const [x, y] = a < b ? [a, b] : [b, a];
      e = { key, a: x, b: y, reports: new Map(), local: null, localLinks: [], gone: false, onPath: false, fresh: false, paths: [], state: 'up' };
      edges.set(key, e);
      node(x);
      node(y);
    }
    return e;
  };
  if (self) node(self);
  for (const record of mesh) {
    if (!record?.address) continue;
    node(record.address).record = record;
    T.seenRecords.add(record.address);
    for (const link of record.links ?? []) {
      if (!link?.peer || link.peer === record.address) continue;
      edge(record.address, link.peer).reports.set(record.address, link);
    }
  }
  if (self && links) {
    for (const link of links) {
      if (!link.peer || link.peer === self) continue;
      const e = edge(self, link.peer);
      e.localLinks.push(link);
      e.local = e.local === 'up' || link.state === 'up' ? 'up' : link.state ?? 'down';
    }
  }
  for (const [key, [a, b]] of T.seenEdges) if (!edges.has(key)) edge(a, b).gone = true;

  // This node's paths, hop by hop (and the one just opened, before the list shows it).
  const routes = [];
  for (const p of paths) {
    let seq = p.hops?.length ? p.hops.map((hop) => hop.node) : null;
    if (!seq && self && p.via) seq = p.via === p.peer ? [self, p.peer] : [self, p.via];
    if (seq) routes.push({ id: p.id, seq, up: p.state === 'up', fresh: false });
  }
  if (T.extraPath) routes.push({ id: T.extraPath.id, seq: T.extraPath.nodes, up: true, fresh: true });
  for (const route of routes) {
    for (let i = 0; i + 1 < route.seq.length; i++) {
      if (!route.seq[i] || !route.seq[i + 1] || route.seq[i] === route.seq[i + 1]) continue;
      const e = edge(route.seq[i], route.seq[i + 1]);
      e.onPath = true;
      if (route.fresh) e.fresh = true;
      if (!e.paths.includes(route.id)) e.paths.push(route.id);
      e.pathUp = e.pathUp || route.up;
      node(route.seq[i]).onPath = true;
      node(route.seq[i + 1]).onPath = true;
    }
  }

  const adjacency = new Map();
  const upAdjacency = new Map();
  const join = (map, a, b) => {
    if (!map.has(a)) map.set(a, new Set());
    map.get(a).add(b);
  };
  for (const e of edges.values()) {
    if (!T.seenEdges.has(e.key)) T.seenEdges.set(e.key, [e.a, e.b]);
    const atSelf = self != null && (e.a === self || e.b === self);
    let value;
    if (e.local != null) value = e.local === 'up' ? 'up' : 'down';
    else if (atSelf && links && !e.reports.size) value = e.onPath && !e.gone && e.pathUp ? 'up' : 'down';
    else if (atSelf && links) value = 'down'; // announced, but this node has no link to it now
    else if (e.reports.size) value = [...e.reports.values()].every((l) => String(l.state ?? 'up').toLowerCase() === 'up') ? 'up' : 'down';
    else value = e.onPath && !e.gone && e.pathUp ? 'up' : 'down';
    e.state = value;
    join(adjacency, e.a, e.b);
    join(adjacency, e.b, e.a);
    if (value === 'up') {
      join(upAdjacency, e.a, e.b);
      join(upAdjacency, e.b, e.a);
    }
  }
  // Hops from this node (over every link drawn), for fading what is far.
  if (self) {
    node(self).dist = 0;
    const queue = [self];
    for (let q = 0; q < queue.length; q++) {
      const a = queue[q];
      const d = nodes.get(a).dist;
      for (const b of adjacency.get(a) ?? []) {
        const n = nodes.get(b);
        if (n.dist === Infinity) {
          n.dist = d + 1;
          queue.push(b);
        }
      }
    }
  }
  for (const n of nodes.values()) {
    n.gone = n.address !== self && !n.record && T.seenRecords.has(n.address);
    n.blocked = blocked.has(n.address);
    n.near = n.dist <= 2;
  }
  return { self, nodes, edges, adjacency, upAdjacency };
}

// ---------------------------------------------------------------------------------------------------------------------
// Layout

function relayout() {
  if (!model || !model.nodes.size) return;
  // Wait for this node's address, so it is the fixed centre from the start.
  if (!model.self && !state.errors.node) return;
  const ids = [...model.nodes.keys()];
  const newIds = ids.filter((id) => !T.pos.has(id));
  const signature = `${ids.length}:${model.edges.size}`;
  if (!newIds.length && signature === T.layoutSig) return;
  T.layoutSig = signature;
  const pairs = [...model.edges.values()].map((e) => [e.a, e.b]);
  const first = T.pos.size === 0;
  T.layout.setGraph(ids, pairs, model.self, T.pos);
  const n = ids.length;
  if (first || newIds.length > n / 3) T.layout.start(n <= 200 ? 300 : n <= 1000 ? 200 : 120, K * 3);
  else if (n <= SMALL) T.layout.start(300, K * 1.5);
  else if (newIds.length) T.layout.start(60, K * 0.6);
  else T.layout.start(20, K * 0.2);
  copyPositions();
  if (!T.userMoved) fit();
  animate();
}

function copyPositions() {
  const L = T.layout;
  for (let i = 0; i < L.n; i++) {
    const id = L.ids[i];
    const p = T.pos.get(id);
    if (p) {
      p.x = L.x[i];
      p.y = L.y[i];
    } else {
      T.pos.set(id, { x: L.x[i], y: L.y[i] });
    }
  }
}

function animate() {
  if (frame || !els) return;
  // A large map is drawn a few times a second while it settles (drawing thousands of elements costs more than the
  // layout itself); a small one every frame.
  let lastDraw = 0;
  const tick = () => {
    frame = 0;
    if (!els) return;
    const more = T.layout.step(12);
    const now = performance.now();
    if (!more || T.layout.n <= 300 || now - lastDraw > 500) {
      lastDraw = now;
      copyPositions();
      if (!T.userMoved) fit();
      else drawPositions();
    }
    if (more) frame = requestAnimationFrame(tick);
  };
  frame = requestAnimationFrame(tick);
}

// ---------------------------------------------------------------------------------------------------------------------
// Drawing

function nodeScale() {
  const k = T.view.k;
  return k >= 1 ? 1 / k : k ** -0.75;
}

function radius(n) {
  return n.address === model.self ? SELF_R : n.near ? NODE_R : FAR_R;
}

function allowedNext() {
  const hops = T.pick.hops;
  const from = hops.length ? hops[hops.length - 1] : model?.self;
  const allowed = new Set(model?.upAdjacency.get(from) ?? []);
  for (const hop of hops) allowed.delete(hop);
  if (model?.self) allowed.delete(model.self);
  return allowed;
}

function renderGraph() {
  if (!els || !model) return;
  const { nodesG, edgesG, nodeEls, edgeEls } = els;
  const selected = T.selected;
  let created = 0;
  for (const e of model.edges.values()) {
    let el = edgeEls.get(e.key);
    if (!el) {
      el = s('line', { class: 'edge', 'data-a': e.a, 'data-b': e.b });
      edgeEls.set(e.key, el);
      edgesG.append(el);
      created++;
    }
    if (el.getAttribute('data-state') !== e.state) el.setAttribute('data-state', e.state);
    const an = model.nodes.get(e.a);
    const bn = model.nodes.get(e.b);
    el.classList.toggle('on-path', e.onPath);
    el.classList.toggle('fresh-path', e.fresh);
    el.classList.toggle('far', !an.near && !bn.near);
    el.classList.toggle('selected', selected?.type === 'edge' && selected.id === e.key);
  }
  const picking = T.pick.on;
  const allowed = picking ? allowedNext() : null;
  const hops = T.pick.hops;
  const last = hops[hops.length - 1];
  for (const n of model.nodes.values()) {
    let g = nodeEls.get(n.address);
    if (!g) {
      g = s('g', { class: 'node', 'data-address': n.address, tabindex: '0', role: 'button' },
        s('title', null, n.address),
        s('circle', { r: NODE_R }),
        s('text', { class: 'label', y: -12, 'text-anchor': 'middle' }, shortAddr(n.address)),
        s('text', { class: 'pick-order', y: 4, 'text-anchor': 'middle' }, ''));
      nodeEls.set(n.address, g);
      nodesG.append(g);
      created++;
    }
    const isSelf = n.address === model.self;
    if (isSelf) g.setAttribute('data-self', 'true');
    else g.removeAttribute('data-self');
    const circle = g.querySelector('circle');
    const r = String(radius(n));
    if (circle.getAttribute('r') !== r) circle.setAttribute('r', r);
    g.classList.toggle('near', n.near);
    g.classList.toggle('far', !n.near);
    g.classList.toggle('gone', n.gone);
    g.classList.toggle('blocked', n.blocked);
    g.classList.toggle('on-path', n.onPath);
    g.classList.toggle('selected', selected?.type === 'node' && selected.id === n.address);
    const order = hops.indexOf(n.address);
    g.classList.toggle('picked', picking && order >= 0);
    const disabled = picking && !(allowed.has(n.address) || n.address === last);
    g.classList.toggle('disabled', disabled);
    g.classList.toggle('allowed', picking && allowed.has(n.address));
    if (disabled) {
      g.setAttribute('tabindex', '-1');
      g.setAttribute('aria-disabled', 'true');
    } else {
      g.setAttribute('tabindex', '0');
      g.removeAttribute('aria-disabled');
    }
    setText(g.querySelector('.pick-order'), picking && order >= 0 ? String(order + 1) : '');
    const where = isSelf ? 'this node' : n.dist === Infinity ? 'not connected to this node' : n.dist === 1 ? 'neighbour' : `${n.dist} hops away`;
    const flags = [n.gone ? 'no longer announced' : '', n.blocked ? 'blocked' : '', n.onPath ? 'on a path' : '',
      picking && order >= 0 ? `hop ${order + 1} of the path being picked` : ''].filter(Boolean).join(', ');
    const label = `node ${shortAddr(n.address)}, ${where}${flags ? `, ${flags}` : ''}`;
    if (g.getAttribute('aria-label') !== label) g.setAttribute('aria-label', label);
    setText(g.querySelector('title'), `${n.address}\n${where}${flags ? `\n${flags}` : ''}`);
  }
  els.svg.classList.toggle('picking', picking);
  els.svg.classList.toggle('small-mesh', model.nodes.size <= 40);
  if (created) drawPositions();
}

function drawPositions() {
  if (!els || !model) return;
  const ns = nodeScale().toFixed(3);
  drawnScale = ns;
  for (const [address, g] of els.nodeEls) {
    const p = T.pos.get(address);
    if (!p) continue;
    g.setAttribute('transform', `translate(${p.x.toFixed(1)} ${p.y.toFixed(1)}) scale(${ns})`);
  }
  for (const [key, el] of els.edgeEls) {
    const e = model.edges.get(key);
    const p = e && T.pos.get(e.a);
    const q = e && T.pos.get(e.b);
    if (!p || !q) continue;
    el.setAttribute('x1', p.x.toFixed(1));
    el.setAttribute('y1', p.y.toFixed(1));
    el.setAttribute('x2', q.x.toFixed(1));
    el.setAttribute('y2', q.y.toFixed(1));
  }
}

function applyView() {
  if (!els) return;
  const { x, y, k } = T.view;
  els.viewport.setAttribute('transform', `translate(${x.toFixed(1)} ${y.toFixed(1)}) scale(${k.toFixed(4)})`);
  els.svg.dataset.zoom = k >= 1.6 ? 'close' : k >= 0.55 ? 'mid' : 'far';
  // Panning moves only the viewport; zooming changes the size of the nodes too.
  if (nodeScale().toFixed(3) !== drawnScale) drawPositions();
}

function fit() {
  if (!els) return;
  const rect = els.svg.getBoundingClientRect();
  if (!rect.width || !rect.height) return;
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const address of model?.nodes.keys() ?? []) {
    const p = T.pos.get(address);
    if (!p) continue;
    minX = Math.min(minX, p.x);
    maxX = Math.max(maxX, p.x);
    minY = Math.min(minY, p.y);
    maxY = Math.max(maxY, p.y);
  }
  if (minX === Infinity) {
    T.view = { x: rect.width / 2, y: rect.height / 2, k: 1 };
  } else {
    // This node (at 0, 0) in the middle of the view.
    const centred = model?.self && T.pos.has(model.self);
    const cx = centred ? T.pos.get(model.self).x : (minX + maxX) / 2;
    const cy = centred ? T.pos.get(model.self).y : (minY + maxY) / 2;
    const pad = 36;
    const w = Math.max(2 * Math.max(maxX - cx, cx - minX), 1);
    const hgt = Math.max(2 * Math.max(maxY - cy, cy - minY), 1);
    const k = Math.max(0.02, Math.min(2, (rect.width - 2 * pad) / w, (rect.height - 2 * pad) / hgt));
    T.view = { k, x: rect.width / 2 - cx * k, y: rect.height / 2 - cy * k };
  }
  applyView();
}

function zoomAt(sx, sy, factor) {
  const k = Math.max(0.02, Math.min(8, T.view.k * factor));
  const wx = (sx - T.view.x) / T.view.k;
  const wy = (sy - T.view.y) / T.view.k;
  T.view = { k, x: sx - wx * k, y: sy - wy * k };
  T.userMoved = true;
  applyView();
}

function zoomCentre(factor) {
  const rect = els.svg.getBoundingClientRect();
  zoomAt(rect.width / 2, rect.height / 2, factor);
}

/** The edge nearest a click on the map (within a few pixels), or null. */
function hitEdge(event) {
  const rect = els.svg.getBoundingClientRect();
  const wx = (event.clientX - rect.left - T.view.x) / T.view.k;
  const wy = (event.clientY - rect.top - T.view.y) / T.view.k;
  const limit = 7 / T.view.k;
  let best = null;
  let bestD = limit * limit;
  for (const e of model?.edges.values() ?? []) {
    const p = T.pos.get(e.a);
    const q = T.pos.get(e.b);
    if (!p || !q) continue;
    const dx = q.x - p.x;
    const dy = q.y - p.y;
    const len2 = dx * dx + dy * dy || 1e-9;
    const t = Math.max(0, Math.min(1, ((wx - p.x) * dx + (wy - p.y) * dy) / len2));
    const cx = p.x + t * dx - wx;
    const cy = p.y + t * dy - wy;
    const d2 = cx * cx + cy * cy;
    if (d2 < bestD) {
      bestD = d2;
      best = e.key;
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------------------------
// Selection and details

function select(selection) {
  T.selected = selection;
  renderGraph();
  renderDetails();
}

function activateNode(address) {
  if (T.pick.on) pickNode(address);
  else select({ type: 'node', id: address });
}

function metricsOf(link) {
  if (!link) return null;
  return {
    rtt: link.rttMicroseconds != null ? fmtMicros(link.rttMicroseconds) : '—',
    loss: link.lossPpm != null ? fmtLoss(link.lossPpm / 1e6) : '—',
    capacity: link.capacityKbps != null ? `${fmtInt(link.capacityKbps)} kbit/s` : '—',
    price: link.price != null ? fmtPrice(link.price) : '—',
    state: String(link.state ?? '—'),
  };
}

function renderDetails() {
  if (!els) return;
  const sel = T.selected;
  const key = sel ? `${sel.type}:${sel.id}` : '';
  if (els.detailsKey !== key) {
    els.detailsKey = key;
    els.detailsInfo = h('div', { class: 'details-info' });
    els.detailsResult = h('div', { class: 'details-result', 'aria-live': 'polite' });
    if (!sel) {
      fill(els.details, h('h2', null, 'Details'),
        h('p', { class: 'muted' }, 'Select a node or a link on the map (or Tab to a node and press Enter) to see it here, with ping, traceroute, opening a path and blocking.'));
      return;
    }
    fill(els.details, els.detailsInfo, sel.type === 'node' ? nodeActions(sel.id) : null, els.detailsResult);
  }
  if (!sel) return;
  // Redrawn only when something in it changed, so a focused button in it keeps its focus.
  const next = h('div', null, sel.type === 'node' ? nodeInfo(sel.id) : edgeInfo(sel.id));
  if (next.innerHTML !== els.detailsInfo.innerHTML) fill(els.detailsInfo, ...next.childNodes);
}

function selectButton(address, text) {
  const b = h('button', { type: 'button', class: 'link-button', 'data-select-node': address, title: address }, text ?? shortAddr(address));
  b.addEventListener('click', () => {
    select({ type: 'node', id: address });
    els?.nodeEls.get(address)?.focus({ preventScroll: true });
  });
  return b;
}

function nodeInfo(address) {
  const n = model?.nodes.get(address);
  const isSelf = address === model?.self;
  const copy = h('button', { type: 'button', class: 'small' }, 'Copy');
  copy.addEventListener('click', async () => {
    if (await copyText(address)) notice('Address copied');
  });
  const where = !n ? 'not on the map' : isSelf ? 'this node' : n.dist === Infinity ? 'not connected to this node' : n.dist === 1 ? 'a neighbour' : `${n.dist} hops away`;
  const rows = [];
  const edges = [...(model?.edges.values() ?? [])].filter((e) => e.a === address || e.b === address);
  edges.sort((x, y) => (x.a === address ? x.b : x.a).localeCompare(y.a === address ? y.b : y.a));
  for (const e of edges) {
    const other = e.a === address ? e.b : e.a;
    const m = metricsOf(e.reports.get(address) ?? e.reports.get(other));
    const pick = h('button', { type: 'button', class: 'link-button', 'data-select-edge': e.key, title: `the link to ${other}` }, shortAddr(other));
    pick.addEventListener('click', () => select({ type: 'edge', id: e.key }));
    rows.push(h('tr', { 'data-peer': other },
      h('td', null, pick), h('td', { class: 'num' }, m?.rtt ?? '—'), h('td', { class: 'num' }, m?.loss ?? '—'),
      h('td', { class: 'num' }, m?.price ?? '—'), h('td', null, badge(e.state, 'edge-state'), e.onPath ? h('span', { class: 'tag' }, 'path') : null)));
  }
  const record = n?.record;
  return [
    h('h2', null, isSelf ? 'This node' : 'Node'),
    h('p', { class: 'address-row' }, h('code', { class: 'addr-full' }, address), copy),
    h('dl', { class: 'facts compact' },
      h('div', null, h('dt', null, 'Where'), h('dd', null, where)),
      h('div', null, h('dt', null, 'Announcement'), h('dd', null, record ? `#${record.sequence}, expires ${new Date(record.expires).toLocaleTimeString([], { hour12: false })}` : n?.gone ? badge('gone', 'node-state', 'bad') : 'none received')),
      n?.blocked ? h('div', null, h('dt', null, 'Blocked'), h('dd', null, badge('blocked', 'node-state'))) : null),
    h('h3', null, `Links (${edges.length})`),
    rows.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'compact-table' },
        h('thead', null, h('tr', null, ['Peer', 'RTT', 'Loss', 'Price', 'State'].map((x) => h('th', { scope: 'col' }, x)))),
        h('tbody', null, rows)))
      : h('p', { class: 'muted' }, 'No links known.'),
  ];
}

function nodeActions(address) {
  if (address === model?.self) return null;
  const wrap = h('div', { class: 'details-actions' });
  const button = (action, text, run) => {
    const b = h('button', { type: 'button', class: 'small', 'data-action': action }, text);
    b.addEventListener('click', () => run(b));
    wrap.append(b);
    return b;
  };
  const out = () => els.detailsResult;
  button('ping', 'Ping', async (b) => {
    fill(out(), h('p', { class: 'muted' }, `Pinging ${shortAddr(address)}…`));
    const r = await act(b, () => ping(address), { busy: 'Pinging' });
    fill(out(), h('p', { class: r.ok ? 'result' : 'error-text' }, r.ok ? `Ping: ${r.value}` : `Ping failed: ${r.error?.message ?? ''}`));
  });
  button('traceroute', 'Traceroute', async (b) => {
    fill(out(), h('p', { class: 'muted' }, `Tracing the route to ${shortAddr(address)}…`));
    const r = await act(b, () => traceroute(address), { busy: 'Tracing' });
    fill(out(), r.ok ? r.value : h('p', { class: 'error-text' }, `Traceroute failed: ${r.error?.message ?? ''}`));
  });
  const open = (policy, text) => button(`open-${policy}`, text, async (b) => {
    fill(out(), h('p', { class: 'muted' }, `Setting up a path to ${shortAddr(address)} (by ${policy}); this can take up to ten seconds…`));
    const r = await act(b, () => openPath({ to: address, policy }), { busy: 'Opening' });
    if (r.ok) {
      showOpened(r.value, out());
    } else {
      fill(out(), h('p', { class: 'error-text' }, `No path opened: ${r.error?.message ?? ''}`));
    }
  });
  open('latency', 'Open path (lowest latency)');
  open('price', 'Open path (lowest price)');
  button('block', 'Block node', async (b) => {
    const r = await act(b, () => api('/api/blocks', { method: 'POST', body: { node: address } }), {
      done: `${shortAddr(address)} blocked: its links are dropped and it may not link again`,
    });
    if (r.ok) load(['blocks', 'links']);
  }).classList.add('danger');
  return wrap;
}

function edgeInfo(key) {
  const e = model?.edges.get(key);
  if (!e) return h('p', { class: 'muted' }, 'This link is no longer on the map.');
  const ra = metricsOf(e.reports.get(e.a));
  const rb = metricsOf(e.reports.get(e.b));
  const row = (label, field) => h('tr', null, h('th', { scope: 'row' }, label), h('td', null, ra?.[field] ?? '—'), h('td', null, rb?.[field] ?? '—'));
  const local = e.localLinks[0];
  return [
    h('h2', null, 'Link'),
    h('p', { class: 'edge-ends' }, selectButton(e.a, e.a === model.self ? `${shortAddr(e.a)} (this node)` : undefined), ' ↔ ',
      selectButton(e.b, e.b === model.self ? `${shortAddr(e.b)} (this node)` : undefined)),
    h('p', null, badge(e.state, 'edge-state'), ' ',
      e.onPath ? h('span', { class: 'tag' }, `on path ${e.paths.map((id) => `#${id}`).join(', ')}`) : null,
      e.gone ? h('span', { class: 'muted' }, ' — no longer announced by either end') : null),
    h('p', { class: 'muted small-text' }, 'As each end announces it:'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'compact-table' },
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, ''), h('th', { scope: 'col', title: `as ${e.a} announces it` }, `by ${shortAddr(e.a)}`), h('th', { scope: 'col', title: `as ${e.b} announces it` }, `by ${shortAddr(e.b)}`))),
      h('tbody', null, row('RTT', 'rtt'), row('Loss', 'loss'), row('Capacity', 'capacity'), row('Price', 'price'), row('State', 'state')))),
    local ? h('p', { class: 'muted' }, `Measured here: RTT ${fmtMs(timespanMs(local.rtt))}, loss ${fmtLoss(local.loss)}, link ${local.id} on ${local.interface} (${local.state})`) : null,
  ];
}

function showOpened(path, into) {
  const nodes = path?.hops?.length ? path.hops.map((hop) => hop.node) : null;
  if (nodes) T.extraPath = { id: path.id, nodes };
  notice(`Path ${path?.id ?? ''} to ${shortAddr(path?.peer)} is open`);
  fill(into, pathSummary(path, model?.self));
  invalidate(['paths']);
  update();
}

// ---------------------------------------------------------------------------------------------------------------------
// Picking a path hop by hop

function pickNode(address) {
  const hops = T.pick.hops;
  if (hops.length && hops[hops.length - 1] === address) hops.pop();
  else if (allowedNext().has(address)) hops.push(address);
  else {
    setText(els.pickStatus, `${shortAddr(address)} is not linked to ${hops.length ? `hop ${hops.length}` : 'this node'}: pick one of the highlighted nodes.`);
    return;
  }
  setText(els.pickStatus, '');
  renderPick();
  renderGraph();
}

function renderPick() {
  if (!els) return;
  const on = T.pick.on;
  els.pickPanel.hidden = !on && !T.pickResult;
  els.pickControls.hidden = !on;
  els.pickButton.hidden = on;
  const hops = T.pick.hops;
  fill(els.pickedHops, hops.map((address, i) => h('li', { 'data-node': address },
    `${i + 1}. `, addr(address), i === hops.length - 1 ? h('span', { class: 'muted' }, ' (destination)') : null)));
  if (!hops.length) els.pickedHops.append(h('li', { class: 'muted empty' }, 'No hop picked yet.'));
  els.openPicked.disabled = !hops.length || els.openPicked.hasAttribute('aria-busy');
  els.unpick.disabled = !hops.length;
  const allowed = on ? allowedNext().size : 0;
  setText(els.pickCount, on ? `${allowed} node${allowed === 1 ? '' : 's'} can come next.` : '');
  if (T.pickResult && els.pickResult.firstChild !== T.pickResult) fill(els.pickResult, T.pickResult);
  els.pickResultWrap.hidden = !T.pickResult;
}

function startPick() {
  T.pick = { on: true, hops: [] };
  T.pickResult = null;
  fill(els.pickResult);
  renderPick();
  renderGraph();
  els.cancelPick.focus();
}

function cancelPick() {
  T.pick = { on: false, hops: [] };
  renderPick();
  renderGraph();
  els.pickButton.focus();
}

async function openPicked() {
  const hops = [...T.pick.hops];
  if (!hops.length) return;
  const to = hops[hops.length - 1];
  const via = hops.slice(0, -1);
  setText(els.pickStatus, `Setting up the path through ${hops.length} node${hops.length === 1 ? '' : 's'}, hop by hop (up to ten seconds)…`);
  const r = await act(els.openPicked, () => openPath({ to, via }), { busy: 'Opening' });
  if (!r.ok) {
    setText(els.pickStatus, `No path opened: ${r.error?.message ?? ''}`);
    renderPick();
    return;
  }
  setText(els.pickStatus, '');
  const path = r.value;
  T.extraPath = { id: path?.id, nodes: path?.hops?.length ? path.hops.map((hop) => hop.node) : [model.self, ...hops] };
  T.pick = { on: false, hops: [] };
  T.pickResult = h('div', null, h('h3', null, 'Path opened — labels at every hop'), pathSummary(path, model?.self));
  notice(`Path ${path?.id ?? ''} to ${shortAddr(to)} is open`);
  invalidate(['paths']);
  renderPick();
  update();
}

// ---------------------------------------------------------------------------------------------------------------------
// The page

function legendLine(className, text) {
  return h('li', null, (() => {
    const icon = s('svg', { width: '34', height: '12', viewBox: '0 0 34 12', 'aria-hidden': 'true', class: 'legend-icon' },
      s('line', { x1: '2', y1: '6', x2: '32', y2: '6', class: className }));
    return icon;
  })(), text);
}

function legendNode(className, text) {
  return h('li', null, s('svg', { width: '34', height: '16', viewBox: '0 0 34 16', 'aria-hidden': 'true', class: 'legend-icon' },
    s('g', { class: className, transform: 'translate(17 8)' }, s('circle', { r: className.includes('lg-self') ? '6' : className.includes('lg-far') ? '3' : '5' }))), text);
}

function mount(root) {
  const svg = s('svg', { id: 'map', role: 'group', 'aria-label': 'Map of the mesh', 'aria-describedby': 'map-help', 'data-zoom': 'mid', tabindex: '-1' });
  const viewport = s('g', { class: 'viewport' });
  const edgesG = s('g', { class: 'edges' });
  const nodesG = s('g', { class: 'nodes' });
  viewport.append(edgesG, nodesG);
  svg.append(viewport);

  const zoomIn = h('button', { type: 'button', id: 'zoom-in', 'aria-label': 'Zoom in', title: 'Zoom in (+)' }, '+');
  const zoomOut = h('button', { type: 'button', id: 'zoom-out', 'aria-label': 'Zoom out', title: 'Zoom out (−)' }, '−');
  const zoomFit = h('button', { type: 'button', id: 'zoom-fit', title: 'Fit the whole mesh (0)' }, 'Fit');
  const pickButton = h('button', { type: 'button', id: 'pick-path' }, 'Open a path by clicking its hops');
  zoomIn.addEventListener('click', () => zoomCentre(1.4));
  zoomOut.addEventListener('click', () => zoomCentre(1 / 1.4));
  zoomFit.addEventListener('click', () => {
    T.userMoved = false;
    fit();
  });
  pickButton.addEventListener('click', startPick);

  const pickedHops = h('ol', { id: 'picked-hops', class: 'picked-hops', 'aria-live': 'polite' });
  const openPickedButton = h('button', { type: 'button', id: 'open-picked', disabled: true }, 'Open this path');
  const cancel = h('button', { type: 'button', id: 'cancel-pick' }, 'Cancel');
  const unpick = h('button', { type: 'button', id: 'unpick-last', class: 'small' }, 'Remove last hop');
  const pickStatus = h('p', { id: 'pick-status', class: 'muted', 'aria-live': 'polite' });
  const pickCount = h('p', { class: 'muted small-text' });
  const pickResult = h('div', { id: 'pick-result', 'aria-live': 'polite' });
  const dismiss = h('button', { type: 'button', id: 'dismiss-pick-result', class: 'small' }, 'Clear highlight');
  openPickedButton.addEventListener('click', openPicked);
  cancel.addEventListener('click', cancelPick);
  unpick.addEventListener('click', () => {
    T.pick.hops.pop();
    renderPick();
    renderGraph();
  });
  dismiss.addEventListener('click', () => {
    T.pickResult = null;
    T.extraPath = null;
    fill(pickResult);
    renderPick();
    update();
  });
  const pickControls = h('div', { class: 'pick-controls' },
    h('p', { class: 'hint', id: 'pick-hint' }, 'Click the hops in order, starting from a neighbour of this node, ending at the destination. Only nodes linked to the last hop can be picked; click the last one again to remove it.'),
    pickCount, pickedHops, h('div', { class: 'button-row' }, openPickedButton, unpick, cancel));
  const pickResultWrap = h('div', { class: 'pick-result-wrap' }, pickResult, dismiss);
  const pickPanel = h('section', { id: 'pick-panel', class: 'pick-panel', 'aria-label': 'Open a path by its hops', hidden: true },
    pickControls, pickStatus, pickResultWrap);

  const details = h('aside', { id: 'details', class: 'details card', 'aria-label': 'Details', 'aria-live': 'polite' });
  const summary = h('p', { id: 'map-summary', class: 'muted' });
  const status = h('div', { class: 'status-line' });
  const legend = h('ul', { class: 'legend map-legend', 'aria-label': 'Legend' },
    legendLine('lg-edge', 'link up (blue, solid)'),
    legendLine('lg-edge lg-down', 'link down or gone (vermillion, dashed)'),
    legendLine('lg-edge lg-on-path', 'on one of this node\u2019s paths (thick)'),
    legendNode('lg-node lg-self', 'this node'),
    legendNode('lg-node lg-near', 'within 2 hops'),
    legendNode('lg-node lg-far', 'further (faded)'),
    legendNode('lg-node lg-gone', 'no longer announced (hollow)'));

  root.append(
    h('h1', { tabindex: '-1' }, 'Topology'),
    status,
    h('div', { class: 'topology' },
      h('div', { class: 'map-column' },
        h('div', { class: 'toolbar map-toolbar' }, zoomIn, zoomOut, zoomFit, pickButton),
        pickPanel,
        h('div', { class: 'map-wrap' }, svg),
        summary,
        h('p', { id: 'map-help', class: 'muted small-text' }, 'Drag to pan, wheel or +/− to zoom. Tab reaches the nodes; Enter selects one. Arrow keys pan, 0 fits.'),
        legend),
      details));

  els = {
    svg, viewport, edgesG, nodesG, nodeEls: new Map(), edgeEls: new Map(), details, detailsKey: null, summary, status,
    pickPanel, pickControls, pickButton, pickedHops, openPicked: openPickedButton, cancelPick: cancel, unpick, pickStatus, pickCount,
    pickResult, pickResultWrap,
  };

  // Pan by dragging; a drag is not a click.
  let drag = null;
  let dragEnded = 0;
  svg.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    drag = { id: e.pointerId, sx: e.clientX, sy: e.clientY, vx: T.view.x, vy: T.view.y, moved: false };
  });
  svg.addEventListener('pointermove', (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    const dx = e.clientX - drag.sx;
    const dy = e.clientY - drag.sy;
    if (!drag.moved && Math.hypot(dx, dy) < 5) return;
    if (!drag.moved) {
      drag.moved = true;
      try {
        svg.setPointerCapture(e.pointerId);
      } catch {
        // The pointer is gone already.
      }
      svg.classList.add('panning');
    }
    T.view.x = drag.vx + dx;
    T.view.y = drag.vy + dy;
    T.userMoved = true;
    applyView();
  });
  const endDrag = (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    if (drag.moved) dragEnded = performance.now();
    drag = null;
    svg.classList.remove('panning');
  };
  svg.addEventListener('pointerup', endDrag);
  svg.addEventListener('pointercancel', endDrag);
  svg.addEventListener('click', (e) => {
    if (performance.now() - dragEnded < 150) return;
    const g = e.target.closest?.('g.node');
    if (g) {
      if (!g.classList.contains('disabled')) activateNode(g.dataset.address);
      return;
    }
    if (T.pick.on) return;
    const line = e.target.closest?.('line.edge');
    const key = line ? edgeKey(line.dataset.a, line.dataset.b) : hitEdge(e);
    select(key ? { type: 'edge', id: key } : null);
  });
  svg.addEventListener('wheel', (e) => {
    e.preventDefault();
    const rect = svg.getBoundingClientRect();
    const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaMode === 2 ? e.deltaY * 400 : e.deltaY;
    zoomAt(e.clientX - rect.left, e.clientY - rect.top, Math.exp(-delta * 0.0015));
  }, { passive: false });
  svg.addEventListener('keydown', (e) => {
    const g = e.target.closest?.('g.node');
    if (g && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      if (!g.classList.contains('disabled')) activateNode(g.dataset.address);
      return;
    }
    const step = 60;
    const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (moves[e.key]) {
      e.preventDefault();
      T.view.x += moves[e.key][0];
      T.view.y += moves[e.key][1];
      T.userMoved = true;
      applyView();
    } else if (e.key === '+' || e.key === '=') {
      e.preventDefault();
      zoomCentre(1.4);
    } else if (e.key === '-' || e.key === '_') {
      e.preventDefault();
      zoomCentre(1 / 1.4);
    } else if (e.key === '0') {
      e.preventDefault();
      T.userMoved = false;
      fit();
    } else if (e.key === 'Escape' && T.pick.on) {
      cancelPick();
    }
  });

  els.resize = new ResizeObserver(() => {
    if (!T.userMoved) fit();
  });
  els.resize.observe(svg);

  applyView();
  renderPick();
  update();
  if (T.layout.running) animate();
}

function renderSummary() {
  if (!els || !model) return;
  let down = 0;
  let onPath = 0;
  for (const e of model.edges.values()) {
    if (e.state !== 'up') down++;
    if (e.onPath) onPath++;
  }
  setText(els.summary, `${fmtInt(model.nodes.size)} nodes, ${fmtInt(model.edges.size)} links (${fmtInt(down)} down), ${fmtInt(onPath)} on this node\u2019s paths.`);
  const error = state.errors.mesh;
  fill(els.status, error && !state.data.mesh ? unavailable(error, 'The map of the mesh') : null);
}

function update() {
  if (!els) return;
  model = buildModel();
  if (T.selected?.type === 'node' && !model.nodes.has(T.selected.id)) T.selected = null;
  if (T.selected?.type === 'edge' && !model.edges.has(T.selected.id)) T.selected = null;
  relayout();
  renderGraph();
  renderDetails();
  renderSummary();
  if (T.pick.on) renderPick();
}

export default {
  id: 'topology',
  title: 'Topology',
  needs: ['mesh', 'node', 'links', 'paths', 'blocks'],
  poll: { links: 3000 },
  mount,
  update,
  reset() {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    T = fresh();
    model = null;
  },
  unmount() {
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    els?.resize.disconnect();
    els = null;
  },
};
