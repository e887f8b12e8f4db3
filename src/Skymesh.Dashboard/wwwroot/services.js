// Services: what other nodes offer (cheapest in all first, with the path to each and what reaching it costs), filtered
// by kind, name and price; connecting this node to a VPN offer, or to the cheapest one, and disconnecting; this node's
// VPN client, its VPN server with its sessions (serve, stop), its mesh IPv6 address, and what it offers itself.
// The same as `skymesh services`, `skymesh vpn …` and the status's services line.

import {
  h, api, act, addr, badge, card, fill, fmtBytes, fmtDateTime, fmtDuration, fmtInt, fmtMicros, fmtPrice, load, notice,
  setBadge, setText, shortAddr, state, syncRows, table, trackDirty, unavailable, ageOf,
} from './core.js';

/** How often the offers are asked for again while the page is shown (they change when records come and go). */
const OFFERS_EVERY_MS = 5000;

const KIND_LABELS = { exit: 'exit', socks: 'SOCKS', vpn: 'VPN', app: 'app' };

let els = null;
let offersTimer = 0;
/** Numbers the offer requests: only the latest one's answer is shown (the filters may have changed meanwhile). */
let offersSeq = 0;
let offersBusy = false;
/** The offers for the filters shown (null: none yet), when they came, and the last error. */
let offers = null;
let offersAt = 0;
let offersError = null;

// ---------------------------------------------------------------------------------------------------------------------
// Small builders

function field(id, label, control, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

function input(id, props) {
  return trackDirty(h('input', { id, name: id, autocomplete: 'off', spellcheck: 'false', ...props }));
}

/** A list of facts: dt/dd pairs, each row data-fact=KEY and its value .f-KEY (rows can be hidden when they do not apply). */
function facts(id, rows) {
  const dl = h('dl', { class: 'facts', id });
  const values = {};
  const wraps = {};
  for (const [key, label] of rows) {
    values[key] = h('dd', { class: `f-${key}` }, '—');
    wraps[key] = h('div', { 'data-fact': key }, h('dt', null, label), values[key]);
    dl.append(wraps[key]);
  }
  return { dl, values, wraps };
}

function setFact(f, key, value, { hideEmpty = false } = {}) {
  const empty = value == null || value === '' || (Array.isArray(value) && value.length === 0);
  f.wraps[key].hidden = hideEmpty && empty;
  setText(f.values[key], empty ? '—' : Array.isArray(value) ? value.join(', ') : value);
}

/** Shows an API's refusal beside the form that caused it, in its words (or hides the box). */
function showError(el, error) {
  el.hidden = !error;
  setText(el, error ? error.message || String(error) : '');
}

/** Drops by reason ({noRoute: 3}) as "noRoute 3 · spoofed 1", or "none". */
function fmtDrops(dropped) {
  const entries = Object.entries(dropped ?? {}).filter(([, n]) => Number(n) > 0);
  return entries.length ? entries.map(([reason, n]) => `${reason} ${fmtInt(n)}`).join(' · ') : 'none';
}

function fmtTraffic(packets, bytes) {
  return `${fmtInt(packets)} packets · ${fmtBytes(bytes)}`;
}

function serviceText(o) {
  const kind = KIND_LABELS[o.kind] ?? o.kind;
  return o.kind === 'app' ? `${kind} ${o.name ?? '?'} (port ${o.port ?? '?'})` : kind;
}

function limitsText(o) {
  const parts = [];
  if (Number(o.maxMbps) > 0) parts.push(`${fmtInt(o.maxMbps)} Mbit/s`);
  if (Number(o.maxSessions) > 0) parts.push(`${fmtInt(o.maxSessions)} session${Number(o.maxSessions) === 1 ? '' : 's'}`);
  return parts.length ? parts.join(', ') : 'no limits';
}

/** The path's nodes, this node first, as a chain. */
function pathChain(nodes) {
  const self = state.data.node?.address;
  return h('ol', { class: 'hops', 'aria-label': 'the path\u2019s nodes, this node first' },
    (nodes ?? []).map((n) => h('li', { class: 'hop', 'data-node': n, 'data-self': n === self ? 'true' : null }, addr(n))));
}

// ---------------------------------------------------------------------------------------------------------------------
// Mount

function mount(root) {
  const status = h('div', { class: 'status-line', id: 'services-status' });

  // This node's VPN client
  const clientState = badge('—', 'vpn-client-state', 'neutral');
  clientState.id = 'vpn-client-state';
  const clientNone = h('p', { id: 'vpn-client-none', class: 'muted' }, 'This node is not connected to a VPN. Connect to an offer below, or to the cheapest one.');
  const client = facts('vpn-client-facts', [
    ['server', 'Server'], ['device', 'Device'], ['address', 'Address'], ['address6', 'IPv6 address'], ['gateway', 'Gateway'],
    ['mtu', 'MTU'], ['routes', 'Routes'], ['dns', 'DNS'], ['networks', 'Site networks'], ['path', 'Path'], ['since', 'Connected for'],
    ['out', 'Sent'], ['in', 'Received'], ['reconnects', 'Reconnects'], ['dropped', 'Dropped'], ['error', 'Last error'],
  ]);
  client.values.error.classList.add('error-text');
  const disconnect = h('button', { type: 'button', id: 'vpn-disconnect', class: 'danger', 'data-action': 'vpn-disconnect' }, 'Disconnect');
  disconnect.addEventListener('click', async () => {
    const r = await act(disconnect, () => api('/api/vpn/connect', { method: 'DELETE' }), {
      busy: 'Disconnecting', done: 'Disconnected from the VPN: the device is gone, the routes and DNS are put back',
    });
    if (!r.ok || !els) return;
    setText(els.connectResult, '');
    load(['vpn', 'paths']);
  });
  const clientCard = card('This node\u2019s VPN', { id: 'vpn-client' },
    h('p', null, clientState), clientNone, client.dl, h('div', { class: 'vpn-actions' }, disconnect));

  // Mesh IPv6
  const ipv6State = badge('—', 'vpn-ipv6-state', 'neutral');
  ipv6State.id = 'vpn-ipv6-state';
  const ipv6Off = h('p', { id: 'vpn-ipv6-off' });
  const ipv6Hint = h('p', { class: 'muted', id: 'vpn-ipv6-hint' }, 'To turn it on, add ', h('code', null, '"ipv6": {}'), ' to node.json and restart the node (it needs CAP_NET_ADMIN).');
  const ipv6 = facts('vpn-ipv6-facts', [['address', 'Address'], ['device', 'Device'], ['mtu', 'MTU'], ['out', 'To the mesh'], ['in', 'From the mesh'], ['dropped', 'Dropped']]);
  const ipv6Card = card('Mesh IPv6', { id: 'vpn-ipv6' }, h('p', null, ipv6State), ipv6Off, ipv6Hint, ipv6.dl);

  // What this node offers
  const own = table('services-own-table', ['Service', 'Price', 'Region', 'Limits'], { caption: 'What this node offers' });
  const ownSummary = h('p', { id: 'services-own-summary', class: 'muted' });
  const ownCard = card('What this node offers', { id: 'services-own' }, own.wrap, ownSummary,
    h('p', { class: 'hint' }, 'Change the offers with ', h('code', null, 'skymesh settings --services JSON'), ' (or ', h('code', null, '--no-services'), '), or node.json\u2019s ', h('code', null, 'services'), '.'));

  // Offers of other nodes: filters, how to connect, the table
  const kind = h('select', { id: 'services-kind', name: 'services-kind' },
    h('option', { value: '' }, 'every kind'), ['exit', 'socks', 'vpn', 'app'].map((k) => h('option', { value: k }, KIND_LABELS[k])));
  const name = input('services-name', { placeholder: 'any', size: '10' });
  const maxPrice = input('services-max-price', { type: 'number', min: '0', step: '1', inputmode: 'numeric', placeholder: 'no cap', class: 'narrow' });
  const refresh = h('button', { type: 'submit', id: 'services-refresh', class: 'small' }, 'Refresh');
  const filterError = h('p', { id: 'services-filter-error', class: 'form-error', role: 'alert', hidden: true });
  const filters = h('form', { id: 'services-filters', class: 'toolbar', role: 'search', 'aria-label': 'Filter the offers' },
    h('label', { for: 'services-kind' }, 'Kind'), kind,
    h('label', { for: 'services-name' }, 'App name'), name,
    h('label', { for: 'services-max-price' }, 'Most in all (µ/MiB)'), maxPrice,
    refresh);
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    refreshOffers(true);
  });
  kind.addEventListener('change', () => refreshOffers(true));
  for (const control of [name, maxPrice]) control.addEventListener('change', () => refreshOffers(true));

  const routes = input('vpn-routes', { placeholder: '10.0.9.0/24, 192.168.5.0/24', 'aria-describedby': 'vpn-routes-hint' });
  const everything = h('input', { type: 'checkbox', id: 'vpn-default-route', name: 'vpn-default-route' });
  everything.addEventListener('change', () => {
    routes.disabled = everything.checked;
  });
  const dns = h('input', { type: 'checkbox', id: 'vpn-dns', name: 'vpn-dns' });
  const networks = input('vpn-networks', { placeholder: 'none' });
  const cheapest = h('button', { type: 'button', id: 'vpn-connect-cheapest', 'data-action': 'vpn-connect-cheapest' }, 'Connect to the cheapest VPN');
  cheapest.addEventListener('click', () => {
    const target = { kind: 'vpn', cheapest: true };
    const cap = els.maxPrice.value.trim();
    if (/^\d+$/.test(cap)) target.maxPrice = Number(cap);
    connect(target, cheapest, `the cheapest VPN offer${target.maxPrice != null ? ` within ${fmtPrice(target.maxPrice)}` : ''}`);
  });
  const connectError = h('p', { id: 'vpn-connect-error', class: 'form-error', role: 'alert', hidden: true });
  const connectResult = h('p', { id: 'vpn-connect-result', class: 'muted', 'aria-live': 'polite' });
  const connectOptions = h('fieldset', { id: 'vpn-connect-options', class: 'connect-options form-stack' },
    h('legend', null, 'Connecting this node to a VPN'),
    field('vpn-routes', 'Networks through the VPN', routes, 'CIDR, separated by commas or spaces.'),
    h('div', { class: 'check-row' },
      h('label', { class: 'check', for: 'vpn-default-route' }, everything, 'Route everything through the VPN (the mesh\u2019s own links stay outside)'),
      h('label', { class: 'check', for: 'vpn-dns' }, dns, 'Use the server\u2019s DNS servers until disconnected')),
    field('vpn-networks', 'Site-to-site: networks behind this host the server should route here', networks),
    h('div', { class: 'button-row' }, cheapest,
      h('small', { class: 'hint' }, 'or press Connect on a VPN offer below. The cheapest counts the relays\u2019 price too, within the cap above when one is given.')),
    connectError, connectResult);

  const list = table('services-table', ['Node', 'Service', 'Price', 'Region', 'Limits', 'Hops', 'RTT', 'Path price', 'Total', 'Expires', 'Path', ''],
    { caption: 'Offers of other nodes, cheapest in all first' });
  const offersMeta = h('p', { id: 'services-meta', class: 'muted small-text', 'aria-live': 'polite' });
  const offersStatus = h('div', { class: 'status-line', id: 'services-offers-status' });
  const offersCard = card('Offers of other nodes', { id: 'services-offers', class: 'wide' },
    h('p', { class: 'muted' }, 'What the nodes this one reaches offer, with the cheapest path to each: the price is the service\u2019s own, the path price the relays\u2019 on the way, the total both (per MiB). Cheapest in all first.'),
    filters, filterError, connectOptions, offersStatus, list.wrap, offersMeta);

  // This node's VPN server
  const serverState = badge('—', 'vpn-server-state', 'neutral');
  serverState.id = 'vpn-server-state';
  const server = facts('vpn-server-facts', [
    ['device', 'Device'], ['pool', 'Pool'], ['pool6', 'IPv6 pool'], ['nat', 'NAT'], ['mtu', 'MTU'], ['sessions', 'Clients'],
    ['in', 'From clients'], ['out', 'To clients'], ['dropped', 'Dropped'],
  ]);
  const sessions = table('vpn-sessions', ['Client', 'Address', 'IPv6 address', 'Site networks', 'MTU', 'Connected for', 'From it', 'To it'], { caption: 'Clients of this node\u2019s VPN' });
  const stop = h('button', { type: 'button', id: 'vpn-stop-serving', class: 'danger', 'data-action': 'vpn-stop-serving' }, 'Stop serving');
  stop.addEventListener('click', async () => {
    const r = await act(stop, () => api('/api/vpn/serve', { method: 'DELETE' }), { busy: 'Stopping', done: 'This node no longer serves the VPN' });
    if (r.ok) load(['vpn']);
  });
  const serving = h('div', { id: 'vpn-serving' }, server.dl, h('h3', null, 'Clients'), sessions.wrap, h('div', { class: 'vpn-actions' }, stop));
  const pool = input('vpn-serve-pool', { placeholder: '10.99.0.0/24' });
  const pool6 = input('vpn-serve-pool6', { placeholder: 'fd00:736b:7670::/64' });
  const nat = h('input', { type: 'checkbox', id: 'vpn-serve-nat', name: 'vpn-serve-nat', checked: true });
  const serveDns = input('vpn-serve-dns', { placeholder: 'none' });
  const serve = h('button', { type: 'submit', id: 'vpn-serve', 'data-action': 'vpn-serve' }, 'Serve the VPN');
  const serveError = h('p', { id: 'vpn-serve-error', class: 'form-error', role: 'alert', hidden: true });
  const serveForm = h('form', { id: 'vpn-serve-form', class: 'form-stack', novalidate: true },
    field('vpn-serve-pool', 'Clients\u2019 IPv4 addresses (the first is this node\u2019s)', pool),
    field('vpn-serve-pool6', 'Clients\u2019 IPv6 prefix ("none" for no IPv6)', pool6),
    field('vpn-serve-dns', 'DNS servers offered to clients (separated by commas)', serveDns),
    h('label', { class: 'check', for: 'vpn-serve-nat' }, nat, 'NAT: clients\u2019 packets leave with this host\u2019s address'),
    serveError,
    h('div', { class: 'form-actions' }, serve));
  serveForm.addEventListener('submit', (e) => {
    e.preventDefault();
    startServing();
  });
  const notServing = h('div', { id: 'vpn-not-serving' },
    h('p', { class: 'muted' }, 'Other nodes\u2019 hosts connect to this node and reach, through it, what its exit rules allow (set them on the Overview page). '
      + 'Empty fields take the defaults shown. To tell the mesh about it, offer a service of kind vpn.'),
    serveForm);
  const serverCard = card('VPN server', { id: 'vpn-server', class: 'wide' }, h('p', null, serverState), serving, notServing);

  root.append(
    h('h1', { tabindex: '-1' }, 'Services'),
    status,
    h('div', { class: 'grid' }, clientCard, ipv6Card, ownCard, offersCard, serverCard));

  els = {
    status, clientState, clientNone, client, disconnect, ipv6State, ipv6Off, ipv6Hint, ipv6, own: own.tbody, ownSummary,
    kind, name, maxPrice, filterError, routes, everything, dns, networks, cheapest, connectError, connectResult,
    offers: list.tbody, offersMeta, offersStatus, serverState, server, sessions: sessions.tbody, serving, notServing, stop,
    pool, pool6, nat, serveDns, serve, serveError,
  };
  offers = null;
  offersError = null;
  update(new Set(['vpn', 'node']));
  renderOffers();
  refreshOffers(true);
  offersTimer = setInterval(() => {
    if (!document.hidden) refreshOffers(false);
  }, OFFERS_EVERY_MS);
}

// ---------------------------------------------------------------------------------------------------------------------
// Actions

function splitList(text) {
  return text.split(/[\s,]+/).map((x) => x.trim()).filter(Boolean);
}

/** POST /api/vpn/connect with the target ({node} or {kind, cheapest, maxPrice}) and the options above the offers. */
async function connect(target, button, what) {
  const body = { ...target, routes: els.everything.checked ? [] : splitList(els.routes.value), defaultRoute: els.everything.checked };
  if (els.dns.checked) body.dns = true;
  const networks = splitList(els.networks.value);
  if (networks.length) body.networks = networks;
  showError(els.connectError, null);
  setText(els.connectResult, `Connecting to ${what}…`);
  const r = await act(button, () => api('/api/vpn/connect', { method: 'POST', body }), { busy: 'Connecting', quiet: true });
  if (!els) return;
  if (!r.ok) {
    setText(els.connectResult, '');
    showError(els.connectError, r.error);
    return;
  }
  const client = r.value?.client;
  const chosen = r.value?.chosen;
  const picked = chosen
    ? ` Chose ${shortAddr(chosen.node)} at ${fmtPrice(chosen.totalPrice)} in all (${fmtInt(chosen.price)} its price, ${fmtInt(chosen.pathPrice)} the relays\u2019), ${fmtInt(chosen.hops)} hop${chosen.hops === 1 ? '' : 's'}.`
    : '';
  const text = `Connected to the VPN of ${shortAddr(client?.server)} as ${client?.address ?? '?'}.${picked}`;
  setText(els.connectResult, text);
  notice(text);
  load(['vpn', 'paths']);
}

async function startServing() {
  const body = { nat: els.nat.checked };
  const pool = els.pool.value.trim();
  const pool6 = els.pool6.value.trim();
  const dns = splitList(els.serveDns.value);
  if (pool) body.pool = pool;
  if (pool6) body.pool6 = pool6;
  if (dns.length) body.dns = dns;
  showError(els.serveError, null);
  const r = await act(els.serve, () => api('/api/vpn/serve', { method: 'POST', body }), { busy: 'Starting', quiet: true });
  if (!els) return;
  if (!r.ok) {
    showError(els.serveError, r.error);
    return;
  }
  notice(`This node serves the VPN on ${r.value?.device ?? 'its device'}, clients from ${r.value?.pool ?? pool}`);
  load(['vpn']);
}

// ---------------------------------------------------------------------------------------------------------------------
// Offers

function offersQuery() {
  const params = new URLSearchParams();
  if (els.kind.value) params.set('kind', els.kind.value);
  const name = els.name.value.trim();
  if (name) params.set('name', name);
  const cap = els.maxPrice.value.trim();
  if (cap) params.set('maxPrice', cap);
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** Asks for the offers matching the filters; `changed`: the person changed them (always asked, never skipped). */
async function refreshOffers(changed) {
  if (!els || (offersBusy && !changed)) return;
  const cap = els.maxPrice.value.trim();
  if (cap && !/^\d+$/.test(cap)) {
    showError(els.filterError, new Error('The most an offer may cost is a whole number of micro-units per MiB'));
    return;
  }
  if (changed) showError(els.filterError, null);
  const seq = ++offersSeq;
  const gen = state.gen;
  offersBusy = true;
  try {
    const list = await api(`/api/services${offersQuery()}`);
    if (!els || seq !== offersSeq || gen !== state.gen) return;
    offers = Array.isArray(list) ? list : [];
    offersAt = Date.now();
    offersError = null;
  } catch (error) {
    if (!els || seq !== offersSeq || gen !== state.gen) return;
    offersError = error;
    // A node that does not answer: what was shown stays (the header says it is unreachable). A refusal: nothing to show.
    if (error.status && error.status !== 502 && error.status !== 504) offers = null;
    if (error.status === 400) showError(els.filterError, error);
  } finally {
    if (seq === offersSeq) offersBusy = false;
  }
  renderOffers();
}

function offerKey(o) {
  return `${o.node}|${o.kind}|${o.name ?? ''}|${o.port ?? ''}`;
}

function createOfferRow(o) {
  const row = h('tr', { 'data-node': o.node, 'data-kind': o.kind },
    h('th', { scope: 'row' }, addr(o.node)),
    h('td', { class: 'c-service' }, serviceText(o)),
    h('td', { class: 'c-price num' }),
    h('td', { class: 'c-region' }),
    h('td', { class: 'c-limits' }),
    h('td', { class: 'c-hop-count num' }),
    h('td', { class: 'c-rtt num' }),
    h('td', { class: 'c-path-price num' }),
    h('td', { class: 'c-total num' }),
    h('td', { class: 'c-expires' }),
    h('td', { class: 'c-path' }),
    h('td', { class: 'actions' }));
  if (o.kind === 'vpn') {
    const button = h('button', { type: 'button', class: 'small', 'data-action': 'vpn-connect', 'data-node': o.node,
      'aria-label': `Connect this node to the VPN of ${shortAddr(o.node)}` }, 'Connect');
    button.addEventListener('click', () => connect({ node: o.node }, button, `the VPN of ${shortAddr(o.node)}`));
    row.querySelector('.actions').append(button);
  }
  return row;
}

function updateOfferRow(row, o) {
  setText(row.querySelector('.c-price'), fmtPrice(o.price));
  setText(row.querySelector('.c-region'), o.region ?? '—');
  setText(row.querySelector('.c-limits'), limitsText(o));
  setText(row.querySelector('.c-hop-count'), fmtInt(o.hops));
  setText(row.querySelector('.c-rtt'), fmtMicros(o.rttMicroseconds));
  setText(row.querySelector('.c-path-price'), fmtPrice(o.pathPrice));
  const total = row.querySelector('.c-total');
  setText(total, fmtPrice(o.totalPrice));
  total.classList.add('service-total');
  const expires = row.querySelector('.c-expires');
  const left = ageOf(o.expires);
  setText(expires, left == null ? '—' : `in ${fmtDuration(-left)}`);
  expires.title = fmtDateTime(o.expires);
  const path = row.querySelector('.c-path');
  const key = (o.path ?? []).join();
  if (path.dataset.key !== key) {
    path.dataset.key = key;
    fill(path, pathChain(o.path));
  }
  const button = row.querySelector('[data-action="vpn-connect"]');
  if (button && !button.hasAttribute('aria-busy')) {
    const connected = Boolean(state.data.vpn?.client);
    button.disabled = connected;
    button.title = connected ? 'This node is connected to a VPN: disconnect it first' : '';
  }
}

function renderOffers() {
  if (!els) return;
  const list = offers ?? [];
  const unreachable = offersError && (!offersError.status || offersError.status === 502 || offersError.status === 504);
  fill(els.offersStatus, offersError && !unreachable && offersError.status !== 400 ? unavailable(offersError, 'Service discovery') : null);
  const filtered = Boolean(els.kind.value || els.name.value.trim() || els.maxPrice.value.trim());
  const empty = offers == null
    ? (offersError ? 'Offers not known.' : 'Asking the node…')
    : filtered ? 'No offer matches the filters.' : 'No node this one reaches offers a service.';
  syncRows(els.offers, list, offerKey, createOfferRow, updateOfferRow, empty);
  if (unreachable && offers) setText(els.offersMeta, `The node does not answer: these are the offers as of ${new Date(offersAt).toLocaleTimeString([], { hour12: false })}.`);
  else if (offers) setText(els.offersMeta, `${fmtInt(list.length)} offer${list.length === 1 ? '' : 's'}${filtered ? ' matching the filters' : ''}.`);
  else setText(els.offersMeta, '');
}

// ---------------------------------------------------------------------------------------------------------------------
// Rendering

function update(names = new Set()) {
  if (!els) return;
  if (names.has('vpn')) {
    const vpn = state.data.vpn;
    const error = state.errors.vpn;
    fill(els.status, !vpn && error ? unavailable(error, 'The VPN') : null);
    renderClient(vpn);
    renderServer(vpn);
    renderIpv6(vpn);
    // The Connect buttons follow whether this node is connected (one VPN at a time).
    if (!els.cheapest.hasAttribute('aria-busy')) {
      els.cheapest.disabled = Boolean(vpn?.client);
      els.cheapest.title = vpn?.client ? 'This node is connected to a VPN: disconnect it first' : '';
    }
    for (const row of els.offers.rows) {
      const o = (offers ?? []).find((x) => offerKey(x) === row.dataset.key);
      if (o) updateOfferRow(row, o);
    }
  }
  if (names.has('node')) renderOwn(state.data.node);
}

function renderClient(vpn) {
  const c = vpn?.client;
  const f = els.client;
  els.clientNone.hidden = Boolean(c) || !vpn;
  f.dl.hidden = !c;
  els.disconnect.hidden = !c;
  if (!vpn) {
    setBadge(els.clientState, '—', 'neutral');
    return;
  }
  if (!c) {
    setBadge(els.clientState, 'not connected', 'neutral');
    return;
  }
  setBadge(els.clientState, c.state, c.state === 'connected' ? 'ok' : 'warn');
  const server = f.values.server;
  if (server.dataset.value !== c.server) {
    server.dataset.value = c.server ?? '';
    fill(server, h('code', { class: 'addr-full' }, c.server ?? '—'));
  }
  setFact(f, 'device', c.device);
  setFact(f, 'address', c.address);
  setFact(f, 'address6', c.address6, { hideEmpty: true });
  setFact(f, 'gateway', c.gateway);
  setFact(f, 'mtu', c.mtu == null ? null : `${fmtInt(c.mtu)} bytes`);
  setFact(f, 'routes', c.defaultRoute ? `everything (${(c.routes ?? []).join(', ')})` : c.routes);
  setFact(f, 'dns', c.dns, { hideEmpty: true });
  setFact(f, 'networks', c.networks, { hideEmpty: true });
  setFact(f, 'path', c.path == null ? 'none (reconnecting)' : `#${c.path}`);
  setFact(f, 'since', fmtDuration(ageOf(c.since)));
  setFact(f, 'out', fmtTraffic(c.packetsOut, c.bytesOut));
  setFact(f, 'in', fmtTraffic(c.packetsIn, c.bytesIn));
  setFact(f, 'reconnects', fmtInt(c.reconnects));
  setFact(f, 'dropped', fmtDrops(c.dropped));
  setFact(f, 'error', c.error, { hideEmpty: true });
  els.disconnect.setAttribute('aria-label', `Disconnect from the VPN of ${shortAddr(c.server)}`);
}

function renderServer(vpn) {
  const s = vpn?.server;
  els.serving.hidden = !s;
  els.notServing.hidden = Boolean(s) || !vpn;
  if (!vpn) {
    setBadge(els.serverState, '—', 'neutral');
    return;
  }
  if (!s) {
    setBadge(els.serverState, 'not serving', 'neutral');
    return;
  }
  setBadge(els.serverState, 'serving', 'ok');
  const f = els.server;
  setFact(f, 'device', s.device);
  setFact(f, 'pool', s.pool);
  setFact(f, 'pool6', s.pool6 ?? 'none');
  setFact(f, 'nat', s.nat ? 'yes: clients leave with this host\u2019s address' : 'no: clients\u2019 addresses are routed as they are');
  setFact(f, 'mtu', `${fmtInt(s.mtu)} bytes`);
  setFact(f, 'sessions', `${fmtInt(s.sessions?.length ?? 0)} of at most ${fmtInt(s.maxSessions)}`);
  setFact(f, 'in', fmtTraffic(s.packetsIn, s.bytesIn));
  setFact(f, 'out', fmtTraffic(s.packetsOut, s.bytesOut));
  setFact(f, 'dropped', fmtDrops(s.dropped));
  syncRows(els.sessions, s.sessions ?? [], (x) => x.node, (x) => h('tr', { 'data-node': x.node },
    h('th', { scope: 'row' }, addr(x.node)), h('td', { class: 'c-address' }), h('td', { class: 'c-address6' }), h('td', { class: 'c-networks' }),
    h('td', { class: 'c-mtu num' }), h('td', { class: 'c-since num' }), h('td', { class: 'c-in num' }), h('td', { class: 'c-out num' })),
  (row, x) => {
    setText(row.querySelector('.c-address'), x.address);
    setText(row.querySelector('.c-address6'), x.address6 ?? '—');
    setText(row.querySelector('.c-networks'), x.networks?.length ? x.networks.join(', ') : '—');
    setText(row.querySelector('.c-mtu'), fmtInt(x.mtu));
    setText(row.querySelector('.c-since'), fmtDuration(ageOf(x.since)));
    setText(row.querySelector('.c-in'), fmtTraffic(x.packetsIn, x.bytesIn));
    setText(row.querySelector('.c-out'), fmtTraffic(x.packetsOut, x.bytesOut));
  }, 'No client is connected.');
}

function renderIpv6(vpn) {
  const v6 = vpn?.ipv6;
  els.ipv6.dl.hidden = !v6;
  els.ipv6Off.hidden = Boolean(v6) || !vpn;
  els.ipv6Hint.hidden = Boolean(v6) || !vpn;
  if (!vpn) {
    setBadge(els.ipv6State, '—', 'neutral');
    return;
  }
  if (!v6) {
    setBadge(els.ipv6State, 'off', 'neutral');
    if (els.ipv6Off.dataset.address !== vpn.meshAddress) {
      els.ipv6Off.dataset.address = vpn.meshAddress ?? '';
      fill(els.ipv6Off, 'off, would be ', h('code', { class: 'addr-full' }, vpn.meshAddress ?? '?'));
    }
    return;
  }
  setBadge(els.ipv6State, 'on', 'ok');
  const f = els.ipv6;
  setFact(f, 'address', v6.address);
  setFact(f, 'device', v6.device);
  setFact(f, 'mtu', `${fmtInt(v6.mtu)} bytes`);
  setFact(f, 'out', fmtTraffic(v6.packetsOut, v6.bytesOut));
  setFact(f, 'in', fmtTraffic(v6.packetsIn, v6.bytesIn));
  setFact(f, 'dropped', fmtDrops(v6.dropped));
}

function renderOwn(node) {
  const services = node?.services;
  const offered = services?.offered ?? [];
  syncRows(els.own, offered, (o) => `${o.kind}|${o.name ?? ''}|${o.port ?? ''}`, (o) => h('tr', { 'data-kind': o.kind },
    h('th', { scope: 'row' }, serviceText(o)), h('td', { class: 'c-price num' }), h('td', { class: 'c-region' }), h('td', { class: 'c-limits' })),
  (row, o) => {
    setText(row.querySelector('.c-price'), fmtPrice(o.price ?? 0));
    setText(row.querySelector('.c-region'), o.region || '—');
    setText(row.querySelector('.c-limits'), limitsText(o));
  }, node ? 'This node offers nothing to other nodes.' : '…');
  if (!node) {
    setText(els.ownSummary, '');
    return;
  }
  const published = `${fmtInt(services?.published ?? 0)} service record${services?.published === 1 ? '' : 's'} published`;
  let known;
  if (services?.known != null) known = `it holds ${fmtInt(services.known)} offer${services.known === 1 ? '' : 's'} of ${fmtInt(services.nodes)} other node${services.nodes === 1 ? '' : 's'}`;
  else if (!node.control || node.control === 'none') known = 'it has no control plane (no broker), so it hears no offers';
  else if (node.control !== 'connected') known = 'it is not on the control bus yet';
  else known = 'it asks its route finder for offers and holds none itself';
  setText(els.ownSummary, `${published}; ${known}.`);
}

export default {
  id: 'services',
  title: 'Services',
  needs: ['vpn', 'node'],
  poll: { vpn: 1000 },
  mount,
  update,
  reset() {
    offersSeq++;
    offersBusy = false;
    offers = null;
    offersError = null;
    offersAt = 0;
  },
  unmount() {
    clearInterval(offersTimer);
    offersTimer = 0;
    offersSeq++;
    offersBusy = false;
    els = null;
  },
};
