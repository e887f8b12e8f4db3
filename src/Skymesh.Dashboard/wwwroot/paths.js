// Paths: the node's paths — state, age, traffic, repairs, price, streams, and every hop with the labels it switches the
// path on — with close, ping and traceroute; and a form to open a path by policy.

import {
  h, api, act, addr, badge, card, fill, fmtBytes, fmtDuration, fmtInt, fmtMs, fmtPrice, intFrom, load, setBadge, setText,
  shortAddr, state, syncRows, table, unavailable, ageOf, notice,
} from './core.js';
import { hopsChain, ping, traceroute, openPath, pathSummary } from './tools.js';

let els = null;
let fresh = null;

function createRow(path) {
  const close = h('button', { type: 'button', class: 'small danger', 'data-action': 'close-path' }, 'Close');
  const pingButton = h('button', { type: 'button', class: 'small', 'data-action': 'ping-path' }, 'Ping');
  const trace = h('button', { type: 'button', class: 'small', 'data-action': 'traceroute-path' }, 'Traceroute');
  const result = h('output', { class: 'ping-result block', 'aria-live': 'polite' });
  const row = h('tr', { 'data-path-id': path.id, 'data-peer': path.peer ?? '' },
    h('th', { scope: 'row' }, `#${path.id}`, h('small', { class: 'block muted c-initiator' })),
    h('td', { class: 'c-peer' }),
    h('td', { class: 'c-via' }),
    h('td', null, badge('', 'path-state'), h('small', { class: 'block c-error error-text' })),
    h('td', { class: 'c-age num' }),
    h('td', { class: 'c-messages num' }),
    h('td', { class: 'path-repairs num' }),
    h('td', { class: 'c-price num' }),
    h('td', { class: 'c-streams' }),
    h('td', { class: 'c-hops' }),
    h('td', { class: 'actions' }, close, pingButton, trace, result));
  close.addEventListener('click', async () => {
    const r = await act(close, () => api(`/api/paths/${encodeURIComponent(path.id)}`, { method: 'DELETE' }), { busy: 'Closing', done: `Path ${path.id} closed` });
    if (r.ok) load(['paths', 'node']);
  });
  pingButton.addEventListener('click', async () => {
    setText(result, 'pinging…');
    result.classList.remove('error-text');
    const r = await act(pingButton, () => ping(row.dataset.peer));
    setText(result, r.ok ? r.value : 'failed');
    result.classList.toggle('error-text', !r.ok);
  });
  trace.addEventListener('click', async () => {
    const peer = row.dataset.peer;
    fill(els.trace, h('p', { class: 'muted' }, `Tracing the route to ${shortAddr(peer)}…`));
    els.traceCard.hidden = false;
    const r = await act(trace, () => traceroute(peer), { busy: 'Tracing' });
    fill(els.trace, r.ok ? r.value : h('p', { class: 'error-text' }, `Traceroute to ${shortAddr(peer)} failed: ${r.error?.message ?? ''}`));
  });
  return row;
}

function updateRow(row, path) {
  row.dataset.peer = path.peer ?? '';
  row.dataset.state = path.state;
  row.classList.toggle('fresh', fresh === path.id);
  setText(row.querySelector('.c-initiator'), path.initiator ? 'opened here' : 'opened by the far end');
  const peer = row.querySelector('.c-peer');
  if (peer.dataset.value !== path.peer) {
    peer.dataset.value = path.peer ?? '';
    fill(peer, addr(path.peer));
  }
  const via = row.querySelector('.c-via');
  if (via.dataset.value !== path.via) {
    via.dataset.value = path.via ?? '';
    fill(via, addr(path.via));
  }
  setBadge(row.querySelector('.path-state'), path.state);
  setText(row.querySelector('.c-error'), path.error ?? '');
  setText(row.querySelector('.c-age'), fmtDuration(ageOf(path.created)));
  setText(row.querySelector('.c-messages'), `${fmtInt(path.messagesSent)} sent · ${fmtInt(path.messagesReceived)} received · ${fmtInt(path.messagesDropped)} dropped`);
  setText(row.querySelector('.path-repairs'), fmtInt(path.repairs ?? 0));
  setText(row.querySelector('.c-price'), path.price == null ? '—' : fmtPrice(path.price));
  const st = path.streams;
  setText(row.querySelector('.c-streams'), st
    ? `${st.count != null ? `${fmtInt(st.count)} stream${st.count === 1 ? '' : 's'} · ` : ''}RTT ${fmtMs(st.rttMs)} · ${fmtInt(st.retransmissions)} retransmitted · window ${fmtBytes(st.window)}`
    : `${fmtInt(path.openStreams ?? 0)} open`);
  const hops = row.querySelector('.c-hops');
  const key = JSON.stringify(path.hops ?? null);
  if (hops.dataset.key !== key) {
    hops.dataset.key = key;
    fill(hops, path.hops?.length
      ? hopsChain(path.hops, state.data.node?.address)
      : h('span', { class: 'muted' }, 'hops not known (a path installed by hand, or opened by the far end)'));
  }
  for (const b of row.querySelectorAll('button')) b.setAttribute('aria-label', `${b.dataset.action === 'close-path' ? 'Close' : b.dataset.action === 'ping-path' ? 'Ping' : 'Traceroute'} path ${path.id} to ${shortAddr(path.peer)}`);
}

function mount(root) {
  const paths = table('paths-table', ['Path', 'Peer', 'First hop', 'State', 'Age', 'Messages', 'Repairs', 'Price', 'Streams', 'Hops (labels: from source · from destination)', ''], { caption: 'Paths' });
  const to = h('input', { id: 'open-to', name: 'open-to', list: 'known-nodes', required: true, placeholder: 'destination address (64 hex digits)', autocomplete: 'off', spellcheck: 'false' });
  const policy = h('select', { id: 'open-policy', name: 'open-policy' },
    h('option', { value: 'latency' }, 'Lowest latency'), h('option', { value: 'price' }, 'Lowest price'), h('option', { value: 'bandwidth' }, 'Most bandwidth'));
  const maxPrice = h('input', { id: 'open-max-price', name: 'open-max-price', type: 'number', min: '0', step: '1', inputmode: 'numeric', placeholder: 'no cap' });
  const maxHops = h('input', { id: 'open-max-hops', name: 'open-max-hops', type: 'number', min: '1', max: '32', step: '1', inputmode: 'numeric', placeholder: '10' });
  const open = h('button', { type: 'submit', id: 'open-path' }, 'Open path');
  const progress = h('p', { id: 'open-progress', class: 'muted', 'aria-live': 'polite' });
  const result = h('div', { id: 'open-result' });
  const form = h('form', { id: 'open-form', class: 'form-grid' },
    h('label', { for: 'open-to' }, 'To'), to,
    h('label', { for: 'open-policy' }, 'Choose by'), policy,
    h('label', { for: 'open-max-price' }, 'Most it may cost (micro-units per MiB)'), maxPrice,
    h('label', { for: 'open-max-hops' }, 'Most hops'), maxHops,
    h('div', { class: 'form-actions' }, open));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const destination = to.value.trim();
    setText(progress, `Setting up a path to ${shortAddr(destination)} hop by hop (this can take up to ten seconds)…`);
    fill(result);
    const r = await act(open, () => {
      const body = { to: destination, policy: policy.value };
      const cap = intFrom(maxPrice, 'The price cap');
      const hops = intFrom(maxHops, 'The most hops');
      if (cap != null) body.maxPrice = cap;
      if (hops != null) body.maxHops = hops;
      return openPath(body);
    }, { busy: 'Opening' });
    setText(progress, r.ok ? '' : `Could not open a path: ${r.error?.message ?? ''}`);
    if (r.ok) {
      fresh = r.value?.id ?? null;
      notice(`Path ${r.value?.id ?? ''} to ${shortAddr(destination)} is open`);
      fill(result, pathSummary(r.value, state.data.node?.address));
      load(['paths']);
    }
  });
  const trace = h('div', { id: 'trace-result', 'aria-live': 'polite' });
  const traceCard = card('Traceroute', { id: 'trace-card' }, trace);
  traceCard.hidden = true;
  const datalist = h('datalist', { id: 'known-nodes' });
  const status = h('div', { class: 'status-line' });
  root.append(
    h('h1', { tabindex: '-1' }, 'Paths'),
    status,
    datalist,
    card('Paths of this node', { id: 'paths-card' }, paths.wrap),
    traceCard,
    card('Open a path', { id: 'open-card' },
      h('p', { class: 'muted' }, 'The control plane finds a route by the policy and sets it up hop by hop. To choose the hops yourself, use “Open a path by clicking its hops” on the Topology page.'),
      form, progress, result));
  els = { paths: paths.tbody, datalist, status, trace, traceCard, knownKey: '' };
  update();
}

function update() {
  if (!els) return;
  const list = Array.isArray(state.data.paths) ? [...state.data.paths].sort((a, b) => a.id - b.id) : [];
  fill(els.status, !state.data.paths && state.errors.paths ? unavailable(state.errors.paths, 'Paths') : null);
  syncRows(els.paths, list, (p) => p.id, createRow, updateRow, 'No paths. Open one below, or on the Topology page.');
  const self = state.data.node?.address;
  const known = (Array.isArray(state.data.mesh) ? state.data.mesh : []).map((n) => n.address).filter((a) => a && a !== self);
  const key = known.join();
  if (key !== els.knownKey) {
    els.knownKey = key;
    fill(els.datalist, known.map((a) => h('option', { value: a })));
  }
}

export default {
  id: 'paths',
  title: 'Paths',
  needs: ['paths', 'mesh', 'node'],
  poll: { paths: 2000 },
  mount,
  update,
  reset() {
    fresh = null;
  },
  unmount() {
    els = null;
  },
};
