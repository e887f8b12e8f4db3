// Overview: the node itself — identity, uptime, interfaces, live traffic, counters, control bus, decisions waiting,
// apps — and the small forms to link to a peer, start a forward or a SOCKS server, and set the price, credit and exits.

import {
  h, s, api, act, addr, badge, card, clean, copyText, fill, fmtBytes, fmtCoins, fmtDateTime, fmtDuration, fmtInt, fmtRate,
  intFrom, load, notice, setBadge, setText, setValue, shortAddr, state, syncRows, table, trackDirty, unavailable, ageOf,
} from './core.js';
import { renderDecisionList } from './decisions.js';

let els = null;

function field(id, label, input, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

function input(id, props) {
  return trackDirty(h('input', { id, name: id, autocomplete: 'off', spellcheck: 'false', ...props }));
}

function mount(root) {
  // Identity and control bus
  const address = h('code', { id: 'node-address-full', class: 'address-full' }, '…');
  const copy = h('button', { type: 'button', id: 'copy-address', class: 'small' }, 'Copy');
  copy.addEventListener('click', async () => {
    const text = state.data.node?.address;
    if (text && (await copyText(text))) notice('Address copied');
  });
  const identity = h('dl', { class: 'facts' },
    h('div', null, h('dt', null, 'Address'), h('dd', { class: 'address-row' }, address, copy)),
    h('div', null, h('dt', null, 'Up for'), h('dd', { id: 'uptime' }, '—')),
    h('div', null, h('dt', null, 'Started'), h('dd', { id: 'started' }, '—')),
    h('div', null, h('dt', null, 'Control bus'), h('dd', null, badge('—', 'control-state', 'neutral'), ' ', h('span', { id: 'broker', class: 'muted' }))),
    h('div', { id: 'control-error-row', hidden: true }, h('dt', null, 'Control error'), h('dd', { id: 'control-error', class: 'error-text' })),
    h('div', null, h('dt', null, 'Exits'), h('dd', { id: 'node-exits' }, '—')));
  identity.querySelector('.control-state').id = 'control-state';

  // Traffic
  const chart = s('svg', { id: 'traffic-chart', viewBox: '0 0 440 170', role: 'img', 'aria-labelledby': 'traffic-chart-title', class: 'chart' },
    s('title', { id: 'traffic-chart-title' }, 'Traffic of the last 60 seconds'));
  const legend = h('p', { id: 'traffic-legend', class: 'legend' },
    h('span', { class: 'key key-in' }, 'in ', h('strong', { id: 'traffic-in' }, '—')),
    h('span', { class: 'key key-out' }, 'out ', h('strong', { id: 'traffic-out' }, '—')));

  // Counters
  const counters = h('dl', { id: 'counters', class: 'counters' });
  const counterNames = [
    ['links', 'Links up'], ['paths', 'Paths'], ['labels', 'Labels'], ['forwarded', 'Forwarded'], ['delivered', 'Delivered'],
    ['forwardDrops', 'Forward drops'], ['badFrames', 'Bad frames'], ['unknownLabels', 'Unknown labels'],
  ];
  const counterEls = {};
  for (const [key, label] of counterNames) {
    counterEls[key] = h('dd', { 'data-counter': key }, '—');
    counters.append(h('div', null, h('dt', null, label), counterEls[key]));
  }

  // Interfaces
  const interfaces = table('interfaces-table', ['Interface', 'Local', 'MTU', 'State', 'Sent', 'Received', 'Drops', ''], { caption: 'Interfaces' });

  // Decisions waiting
  const decisions = h('div', { id: 'overview-decisions', class: 'decision-list' });

  // Apps
  const apps = table('apps-table', ['App', 'Kind', 'Listens on', 'Through', 'Target', 'Accepted', 'Active', 'Failed', ''], { caption: 'Apps' });

  // Connect to a peer
  const connectInterface = h('select', { id: 'connect-interface', name: 'connect-interface' }, h('option', { value: '' }, 'first interface'));
  const connectButton = h('button', { type: 'submit', id: 'connect' }, 'Connect');
  const connectForm = h('form', { id: 'connect-form', class: 'form-stack' },
    field('connect-endpoint', 'Endpoint (host:port)', input('connect-endpoint', { placeholder: '192.0.2.7:7400', required: true })),
    field('connect-peer', 'Its address (optional: the link is refused if another node answers)', input('connect-peer', { placeholder: '64 hex digits', list: 'known-addresses' })),
    field('connect-interface', 'Interface', connectInterface),
    h('div', { class: 'form-actions' }, connectButton));
  connectForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const endpoint = els.connectEndpoint.value.trim();
    const peer = els.connectPeer.value.trim();
    const body = { endpoint };
    if (peer) body.peer = peer;
    if (connectInterface.value) body.interface = connectInterface.value;
    const result = await act(connectButton, () => api('/api/links', { method: 'POST', body }), {
      busy: 'Connecting', done: (link) => `Linked to ${shortAddr(link?.peer) ?? endpoint} (${link?.state ?? 'handshaking'})`,
    });
    if (result.ok) {
      els.connectEndpoint.value = '';
      els.connectPeer.value = '';
      clean(els.connectEndpoint, els.connectPeer);
      load(['links', 'node']);
    }
  });

  // Port forward
  const forwardButton = h('button', { type: 'submit', id: 'start-forward' }, 'Start forward');
  const forwardForm = h('form', { id: 'forward-form', class: 'form-stack' },
    field('forward-listen', 'Listen on (address:port here)', input('forward-listen', { placeholder: '127.0.0.1:8080', required: true })),
    field('forward-to', 'Through node (its address)', input('forward-to', { placeholder: '64 hex digits', list: 'known-addresses', required: true })),
    field('forward-target', 'Target (host:port, reached from that node)', input('forward-target', { placeholder: '127.0.0.1:80', required: true })),
    h('div', { class: 'form-actions' }, forwardButton));
  forwardForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { listen: els.forwardListen.value.trim(), to: els.forwardTo.value.trim(), target: els.forwardTarget.value.trim(), detach: true };
    const result = await act(forwardButton, () => api('/api/forwards', { method: 'POST', body }), {
      busy: 'Starting', done: (app) => `Forward ${app?.listen ?? body.listen} → ${shortAddr(body.to)} ${body.target} started`,
    });
    if (result.ok) {
      clean(els.forwardListen, els.forwardTo, els.forwardTarget);
      load(['apps', 'paths']);
    }
  });

  // SOCKS
  const socksButton = h('button', { type: 'submit', id: 'start-socks' }, 'Start SOCKS server');
  const socksForm = h('form', { id: 'socks-form', class: 'form-stack' },
    field('socks-listen', 'Listen on (address:port here)', input('socks-listen', { placeholder: '127.0.0.1:1080', required: true })),
    field('socks-exit', 'Exit node (optional when this node has paths to one node only)', input('socks-exit', { placeholder: '64 hex digits', list: 'known-addresses' })),
    h('div', { class: 'form-actions' }, socksButton));
  socksForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { listen: els.socksListen.value.trim(), detach: true };
    const exit = els.socksExit.value.trim();
    if (exit) body.exit = exit;
    const result = await act(socksButton, () => api('/api/socks', { method: 'POST', body }), {
      busy: 'Starting', done: (app) => `SOCKS server on ${app?.listen ?? body.listen} started`,
    });
    if (result.ok) {
      clean(els.socksListen, els.socksExit);
      load(['apps', 'paths']);
    }
  });

  // Settings
  const price = input('settings-price', { type: 'number', min: '0', step: '1', inputmode: 'numeric' });
  const credit = input('settings-credit', { type: 'number', min: '0', step: '1', inputmode: 'numeric' });
  const exits = trackDirty(h('textarea', { id: 'settings-exits', name: 'settings-exits', rows: '4', spellcheck: 'false', placeholder: '127.0.0.1:*\n*:443' }));
  const priceHint = h('small', { class: 'hint', id: 'settings-price-hint' }, '');
  const creditHint = h('small', { class: 'hint', id: 'settings-credit-hint' }, '');
  const coinHint = (inputEl, hintEl, suffix) => () => {
    const v = inputEl.value.trim();
    setText(hintEl, /^\d+$/.test(v) ? `= ${fmtCoins(Number(v))} coins${suffix}` : 'micro-units (a millionth of a coin)');
  };
  const updatePriceHint = coinHint(price, priceHint, ' per MiB forwarded');
  const updateCreditHint = coinHint(credit, creditHint, ' a neighbour may owe before it is throttled');
  price.addEventListener('input', updatePriceHint);
  credit.addEventListener('input', updateCreditHint);
  const saveSettings = h('button', { type: 'submit', id: 'save-settings' }, 'Save settings');
  const settingsForm = h('form', { id: 'settings-form', class: 'form-stack' },
    h('div', { class: 'field' }, h('label', { for: 'settings-price' }, 'Price per MiB forwarded (micro-units)'), price, priceHint),
    h('div', { class: 'field' }, h('label', { for: 'settings-credit' }, 'Default credit limit of a neighbour (micro-units)'), credit, creditHint),
    h('div', { class: 'field' }, h('label', { for: 'settings-exits' }, 'Exit rules, one per line (host:port; * for any)'), exits,
      h('small', { class: 'hint' }, 'Which destinations peers may reach through this node, e.g. 127.0.0.1:*, 10.0.0.0/8:80-443, *:443. Empty: none.')),
    h('div', { class: 'form-actions' }, saveSettings));
  settingsForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const result = await act(saveSettings, () => {
      const body = {};
      const p = intFrom(price, 'The price');
      const c = intFrom(credit, 'The credit limit');
      if (p != null) body.price = p;
      if (c != null) body.creditLimit = c;
      body.exits = exits.value.split('\n').map((line) => line.trim()).filter(Boolean);
      return api('/api/settings', { method: 'PUT', body });
    }, { busy: 'Saving', done: 'Settings saved' });
    if (result.ok) {
      clean(price, credit, exits);
      if (result.value && typeof result.value === 'object') state.data.settings = result.value;
      load(['settings', 'node']);
    }
  });

  const datalist = h('datalist', { id: 'known-addresses' });
  const nodeStatus = h('div', { class: 'status-line' });

  root.append(
    h('h1', { tabindex: '-1' }, 'Overview'),
    nodeStatus,
    datalist,
    h('div', { class: 'grid' },
      card('This node', { id: 'identity' }, identity),
      card('Traffic', { id: 'traffic' }, chart, legend),
      card('Counters', { id: 'counters-card' }, counters),
      card('Decisions waiting', { id: 'overview-decisions-card', class: 'wide' }, decisions),
      card('Interfaces', { id: 'interfaces-card', class: 'wide' }, interfaces.wrap),
      card('Apps', { id: 'apps-card', class: 'wide' }, apps.wrap),
      card('Connect to a peer', { id: 'connect-card' }, connectForm),
      card('Port forward', { id: 'forward-card' }, forwardForm),
      card('SOCKS server', { id: 'socks-card' }, socksForm),
      card('Price, credit and exits', { id: 'settings-card' }, settingsForm)));

  els = {
    address, chart, counterEls, datalist, nodeStatus, decisions, price, credit, exits, connectInterface,
    interfaces: interfaces.tbody, apps: apps.tbody, updatePriceHint, updateCreditHint,
    connectEndpoint: connectForm.querySelector('#connect-endpoint'), connectPeer: connectForm.querySelector('#connect-peer'),
    forwardListen: forwardForm.querySelector('#forward-listen'), forwardTo: forwardForm.querySelector('#forward-to'),
    forwardTarget: forwardForm.querySelector('#forward-target'),
    socksListen: socksForm.querySelector('#socks-listen'), socksExit: socksForm.querySelector('#socks-exit'),
    controlState: identity.querySelector('#control-state'),
  };
  update(new Set(Object.keys(state.data)));
}

function update(names = new Set()) {
  if (!els) return;
  const node = state.data.node;
  fill(els.nodeStatus, !node && state.errors.node ? unavailable(state.errors.node, 'The node') : null);
  if (node) {
    setText(els.address, node.address);
    setText(document.getElementById('uptime'), fmtDuration(ageOf(node.started)));
    setText(document.getElementById('started'), fmtDateTime(node.started));
    setBadge(els.controlState, node.control ?? 'none');
    setText(document.getElementById('broker'), node.broker ? `broker ${node.broker}` : 'no broker configured');
    const errorRow = document.getElementById('control-error-row');
    errorRow.hidden = !node.controlError;
    setText(document.getElementById('control-error'), node.controlError ?? '');
    setText(document.getElementById('node-exits'), node.exits?.length ? node.exits.join(', ') : 'none (not an exit)');
    for (const [key, el] of Object.entries(els.counterEls)) setText(el, fmtInt(node[key]));
  }
  if (names.has('interfaces') || names.has('node')) {
    drawChart();
    renderInterfaces();
  }
  if (names.has('decisions')) renderDecisionList(els.decisions, state.data.decisions?.pending ?? []);
  if (names.has('apps')) renderApps();
  if (names.has('settings')) {
    const settings = state.data.settings;
    if (settings) {
      setValue(els.price, settings.price);
      setValue(els.credit, settings.creditLimit);
      setValue(els.exits, (settings.exits ?? []).join('\n'));
      els.updatePriceHint();
      els.updateCreditHint();
    }
  }
  if (names.has('links') || names.has('paths')) renderKnown();
}

function renderKnown() {
  const known = new Set();
  for (const l of state.data.links ?? []) if (l.peer) known.add(l.peer);
  for (const p of state.data.paths ?? []) if (p.peer) known.add(p.peer);
  fill(els.datalist, [...known].sort().map((a) => h('option', { value: a })));
}

function renderInterfaces() {
  const list = Array.isArray(state.data.interfaces) ? state.data.interfaces : [];
  const select = els.connectInterface;
  const wanted = ['', ...list.map((i) => i.name)];
  if (select.options.length !== wanted.length || wanted.some((name, i) => select.options[i].value !== name)) {
    const value = select.value;
    fill(select, h('option', { value: '' }, 'first interface'), list.map((i) => h('option', { value: i.name }, i.name)));
    select.value = wanted.includes(value) ? value : '';
  }
  syncRows(els.interfaces, list, (i) => i.name, (i) => {
    const toggle = h('button', { type: 'button', class: 'small', 'data-action': 'interface-toggle', 'data-name': i.name });
    toggle.addEventListener('click', async () => {
      const current = (state.data.interfaces ?? []).find((x) => x.name === i.name);
      const up = current ? current.up !== false : true;
      const result = await act(toggle, () => api(`/api/interfaces/${encodeURIComponent(i.name)}`, { method: 'PUT', body: { up: !up } }), {
        done: `Interface ${i.name} ${up ? 'taken down' : 'brought up'}`,
      });
      if (result.ok) load(['interfaces', 'links', 'node']);
    });
    return h('tr', { 'data-name': i.name },
      h('th', { scope: 'row' }, i.name), h('td', { class: 'c-local' }), h('td', { class: 'c-mtu num' }),
      h('td', null, badge('', 'interface-state')), h('td', { class: 'c-sent num' }), h('td', { class: 'c-received num' }),
      h('td', { class: 'c-drops num' }), h('td', { class: 'actions' }, toggle));
  }, (row, i) => {
    const up = i.up !== false;
    row.dataset.state = up ? 'up' : 'down';
    setText(row.querySelector('.c-local'), i.local);
    setText(row.querySelector('.c-mtu'), fmtInt(i.mtu));
    setBadge(row.querySelector('.interface-state'), up ? 'up' : 'down');
    setText(row.querySelector('.c-sent'), `${fmtBytes(i.bytesSent)} · ${fmtInt(i.framesSent)} frames`);
    setText(row.querySelector('.c-received'), `${fmtBytes(i.bytesReceived)} · ${fmtInt(i.framesReceived)} frames`);
    setText(row.querySelector('.c-drops'), `${fmtInt(i.sendDrops)} out, ${fmtInt(i.receiveDrops)} in`);
    const toggle = row.querySelector('[data-action="interface-toggle"]');
    if (!toggle.disabled) setText(toggle, up ? 'Take down' : 'Bring up');
    toggle.setAttribute('aria-label', `${up ? 'Take down' : 'Bring up'} interface ${i.name}`);
  }, state.errors.interfaces ? `Interfaces unavailable: ${state.errors.interfaces.message}` : 'No interfaces.');
}

function renderApps() {
  const list = Array.isArray(state.data.apps) ? state.data.apps : [];
  syncRows(els.apps, list, (a) => a.id, (a) => {
    const stop = h('button', { type: 'button', class: 'small danger', 'data-action': 'stop-app', 'data-id': a.id, 'aria-label': `Stop app ${a.id}` }, 'Stop');
    stop.addEventListener('click', async () => {
      const result = await act(stop, () => api(`/api/apps/${encodeURIComponent(a.id)}`, { method: 'DELETE' }), { done: `App ${a.id} stopped` });
      if (result.ok) load(['apps']);
    });
    return h('tr', { 'data-app-id': a.id },
      h('th', { scope: 'row' }, String(a.id)), h('td', null, a.kind === 'socks' ? 'SOCKS' : a.kind === 'forward' ? 'forward' : a.kind),
      h('td', null, a.listen), h('td', null, addr(a.destination)), h('td', null, a.target ?? '—'),
      h('td', { class: 'c-accepted num' }), h('td', { class: 'c-active num' }), h('td', { class: 'c-failed num' }),
      h('td', { class: 'actions' }, stop));
  }, (row, a) => {
    setText(row.querySelector('.c-accepted'), fmtInt(a.accepted));
    setText(row.querySelector('.c-active'), fmtInt(a.active));
    setText(row.querySelector('.c-failed'), fmtInt(a.failed));
  }, 'No apps running. Start a port forward or a SOCKS server below.');
}

/** 2^n bytes per second above v: a scale that reads well in KiB/MiB. */
function niceMax(v) {
  return 2 ** Math.ceil(Math.log2(Math.max(v, 1024)));
}

function drawChart() {
  const svg = els.chart;
  const W = 440;
  const H = 170;
  const L = 78;
  const R = 10;
  const T = 10;
  const B = 24;
  const now = Date.now();
  const samples = state.traffic;
  let peak = 0;
  for (const sample of samples) peak = Math.max(peak, sample.in, sample.out);
  const max = niceMax(peak);
  const x = (t) => L + (W - L - R) * (1 - (now - t) / 60_000);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const title = svg.querySelector('title');
  const last = samples[samples.length - 1];
  setText(title, last ? `Traffic of the last 60 seconds: in ${fmtRate(last.in)}, out ${fmtRate(last.out)}` : 'Traffic of the last 60 seconds: no samples yet');
  const parts = [title];
  for (const fraction of [0, 0.5, 1]) {
    const yy = y(max * fraction);
    parts.push(s('line', { x1: L, x2: W - R, y1: yy, y2: yy, class: 'grid-line' }));
    parts.push(s('text', { x: L - 6, y: yy + 4, 'text-anchor': 'end', class: 'axis' }, fmtRate(max * fraction)));
  }
  parts.push(s('text', { x: L, y: H - 6, class: 'axis' }, '60 s ago'));
  parts.push(s('text', { x: W - R, y: H - 6, 'text-anchor': 'end', class: 'axis' }, 'now'));
  const visible = samples.filter((sample) => now - sample.t <= 60_000);
  if (visible.length > 1) {
    const points = (key) => visible.map((sample) => `${x(sample.t).toFixed(1)},${y(sample[key]).toFixed(1)}`).join(' ');
    parts.push(s('polyline', { points: points('in'), class: 'series series-in', fill: 'none' }));
    parts.push(s('polyline', { points: points('out'), class: 'series series-out', fill: 'none' }));
  }
  svg.replaceChildren(...parts);
  setText(document.getElementById('traffic-in'), last ? fmtRate(last.in) : '—');
  setText(document.getElementById('traffic-out'), last ? fmtRate(last.out) : '—');
}

export default {
  id: 'overview',
  title: 'Overview',
  needs: ['node', 'interfaces', 'apps', 'settings', 'decisions', 'links', 'paths'],
  poll: { apps: 3000 },
  mount,
  update,
  unmount() {
    els = null;
  },
};
