// Skymesh dashboard: the router, the header (node, switcher, connection, pending decisions), the event stream and the
// once-a-second poll. Pages live in their own modules; core.js holds what they share.

import {
  KINDS, MAX_EVENTS, state, hooks, load, invalidate, onChange, emitEvents, normaliseKind, resetData, shortAddr, setText,
  toast, h,
} from './core.js';
import { renderDecisionList } from './decisions.js';
import overview from './overview.js';
import topology from './topology.js';
import links from './links.js';
import paths from './paths.js';
import payments from './payments.js';
import events from './events.js';
import decisions from './decisions.js';
import nodes from './nodes.js';
import exchange from './exchange.js';
import services from './services.js';

const PAGES = { overview, topology, links, paths, services, payments, exchange, events, decisions, nodes };
const HEADER_NEEDS = ['node', 'decisions', 'dashboardNodes'];
const STORAGE_KEY = 'skymesh.dashboard.node';

const $ = (selector) => document.querySelector(selector);

let current = null;
let pagePolls = [];

// ---------------------------------------------------------------------------------------------------------------------
// Router

function route() {
  const match = /^#\/([a-z]+)/.exec(location.hash);
  const id = match && Object.hasOwn(PAGES, match[1]) ? match[1] : 'overview';
  if (!match || match[1] !== id) history.replaceState(null, '', `#/${id}`);
  show(id, false);
}

function show(id, force) {
  if (current && current.id === id && !force) return;
  for (const timer of pagePolls) clearInterval(timer);
  pagePolls = [];
  try {
    current?.page.unmount?.();
  } catch (e) {
    console.error(e);
  }
  const page = PAGES[id];
  const root = $('#page');
  root.replaceChildren();
  root.dataset.page = id;
  for (const key of Object.keys(PAGES)) {
    const link = document.getElementById(`nav-${key}`);
    if (key === id) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${page.title} · Skymesh`;
  state.needs = new Set([...HEADER_NEEDS, ...page.needs]);
  current = { id, page };
  try {
    page.mount(root);
  } catch (e) {
    console.error(e);
    root.append(h('p', { class: 'unavailable' }, `This page failed to draw: ${e.message}`));
  }
  load(page.needs);
  for (const [name, ms] of Object.entries(page.poll ?? {})) {
    pagePolls.push(setInterval(() => {
      if (!document.hidden) load([name]);
    }, ms));
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Header

function setConnection(value) {
  state.connection = value;
  const el = $('#connection');
  el.dataset.state = value;
  setText(el, value === 'connected' ? 'live' : value === 'lost' ? 'node unreachable — reconnecting…' : 'connecting…');
}

let startedSeen = null;

function updateHeader(names) {
  const node = state.data.node;
  const address = $('#node-address');
  setText(address, node?.address ? shortAddr(node.address) : '…');
  address.title = node?.address ?? '';
  if (node?.started) {
    // A node that restarted numbers its events from 1 again: follow it from there.
    if (startedSeen && Math.abs(Date.parse(startedSeen) - Date.parse(node.started)) > 2000) {
      lastSeq = 0;
      openEvents();
    }
    startedSeen = node.started;
  }
  if (names.has('decisions') || names.has('node')) {
    const pending = state.data.decisions?.pending ?? [];
    const count = $('#pending-count');
    setText(count, String(pending.length));
    count.dataset.count = String(pending.length);
    count.setAttribute('aria-label', `${pending.length} decision${pending.length === 1 ? '' : 's'} waiting`);
    const strip = $('#pending-strip');
    strip.hidden = pending.length === 0;
    renderDecisionList($('#pending-strip-list'), pending, { compact: true, empty: null });
  }
  if (names.has('dashboardNodes')) {
    renderNodeSelect();
    const list = state.data.dashboardNodes;
    if (state.nodeName && Array.isArray(list) && !list.some((n) => n.name.toLowerCase() === state.nodeName.toLowerCase())) {
      toast(`The dashboard no longer lists node ${state.nodeName}; showing this node.`);
      switchNode('');
    }
  }
}

function renderNodeSelect() {
  const select = $('#node-select');
  const list = Array.isArray(state.data.dashboardNodes) ? state.data.dashboardNodes : [];
  const options = [['', 'this node']];
  for (const n of list) options.push([n.name, n.reachable === false ? `${n.name} (unreachable)` : n.name]);
  if (state.nodeName && !options.some(([value]) => value === state.nodeName)) options.push([state.nodeName, state.nodeName]);
  const same = select.options.length === options.length
    && options.every(([value, text], i) => select.options[i].value === value && select.options[i].textContent === text);
  if (!same) select.replaceChildren(...options.map(([value, text]) => h('option', { value }, text)));
  select.value = state.nodeName;
}

/** Watches another node (name) or this one (''): the page stays, its data come from there. */
function switchNode(name) {
  const value = name || '';
  if (value === state.nodeName) {
    $('#node-select').value = value;
    return;
  }
  state.nodeName = value;
  state.base = value ? `/nodes/${encodeURIComponent(value)}` : '';
  try {
    if (value) localStorage.setItem(STORAGE_KEY, value);
    else localStorage.removeItem(STORAGE_KEY);
  } catch {
    // Storage refused (private mode): the choice lasts as long as the page.
  }
  resetData();
  lastSeq = 0;
  startedSeen = null;
  for (const page of Object.values(PAGES)) page.reset?.();
  setConnection('connecting');
  renderNodeSelect();
  updateHeader(new Set(['node', 'decisions']));
  openEvents();
  show(current?.id ?? 'overview', true);
  load(['node', 'decisions', 'interfaces']);
}

// ---------------------------------------------------------------------------------------------------------------------
// Events

let source = null;
let retryTimer = 0;
let retryDelay = 500;
let lastSeq = 0;
let batch = [];
let batchTimer = 0;

function openEvents() {
  if (source) source.close();
  clearTimeout(retryTimer);
  const url = `${state.base}/api/events${lastSeq ? `?after=${lastSeq}` : ''}`;
  const es = new EventSource(url);
  source = es;
  es.onopen = () => {
    if (source !== es) return;
    retryDelay = 500;
    const wasLost = state.connection === 'lost';
    setConnection('connected');
    if (wasLost) load([...state.needs]);
  };
  es.onerror = () => {
    if (source !== es) return;
    setConnection('lost');
    if (es.readyState === EventSource.CLOSED) {
      retryTimer = setTimeout(() => {
        if (source === es) openEvents();
      }, retryDelay);
      retryDelay = Math.min(5000, retryDelay * 2);
    }
  };
  const handler = (event) => {
    if (source === es) receive(event);
  };
  for (const kind of KINDS) es.addEventListener(kind, handler);
  es.addEventListener('missed', handler);
  es.onmessage = handler;
}

function receive(event) {
  let data = {};
  try {
    data = JSON.parse(event.data);
  } catch {
    data = { detail: String(event.data ?? '') };
  }
  let entry;
  if (event.type === 'missed') {
    entry = { seq: 0, at: new Date().toISOString(), kind: 'Missed', peer: null, detail: `${data.missed ?? 'some'} events were missed (the node keeps only its latest)` };
  } else {
    const seq = Number(data.sequence ?? event.lastEventId) || 0;
    if (seq && seq <= lastSeq) return;
    if (seq) lastSeq = seq;
    entry = {
      seq, at: data.at ?? new Date().toISOString(), kind: normaliseKind(event.type !== 'message' ? event.type : data.kind),
      peer: data.peer ?? null, link: data.link ?? null, path: data.path ?? null, app: data.app ?? null, detail: data.detail ?? '',
    };
  }
  state.events.push(entry);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  batch.push(entry);
  invalidate(affected(entry.kind));
  if (!batchTimer) {
    batchTimer = setTimeout(() => {
      batchTimer = 0;
      const list = batch;
      batch = [];
      emitEvents(list);
    }, 100);
  }
}

/** What an event changes, to reload. */
function affected(kind) {
  if (kind.startsWith('Link') || kind === 'HandshakeRefused') return ['links', 'node', 'mesh', 'neighbours', 'balance'];
  if (kind.startsWith('Path')) return ['paths', 'node'];
  if (kind.startsWith('Announcement')) return ['mesh'];
  if (kind.startsWith('Receipt') || kind.startsWith('Settlement')) return ['balance'];
  if (kind.startsWith('Credit')) return ['balance', 'neighbours', 'links'];
  if (kind.startsWith('App')) return ['apps'];
  if (kind.startsWith('Control')) return ['node', 'mesh', 'balance', 'paths', 'decisions'];
  if (kind.startsWith('Decision')) return ['decisions'];
  if (kind.startsWith('Interface')) return ['interfaces', 'links'];
  if (kind === 'NodeBlocked' || kind === 'NodeUnblocked') return ['blocks', 'neighbours', 'links', 'mesh', 'decisions'];
  if (kind === 'SettingsChanged') return ['settings', 'neighbours', 'decisions', 'node'];
  if (kind.startsWith('Vpn')) return ['vpn', 'paths'];
  if (kind === 'Missed') return [...state.needs];
  return [];
}

// ---------------------------------------------------------------------------------------------------------------------
// The once-a-second poll (the traffic chart, uptime, and whether the node answers)

let polling = false;
let signedOutShown = false;

async function poll() {
  if (polling) return;
  polling = true;
  const gen = state.gen;
  try {
    await load(['node', 'interfaces']);
  } finally {
    polling = false;
  }
  if (gen !== state.gen) return;
  const error = state.errors.node;
  if (error && (error.status === 0 || error.status === 502 || error.status === 504)) setConnection('lost');
  else if (!error && source?.readyState === EventSource.OPEN) setConnection('connected');
  if (error?.status === 401 && !signedOutShown) {
    signedOutShown = true;
    toast(`Not signed in: ${error.message}. Open the address \`skymesh dashboard\` prints to sign in again.`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Start

function start() {
  const toastEl = $('#toast');
  $('#toast-close').addEventListener('click', () => {
    toastEl.hidden = true;
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !toastEl.hidden) toastEl.hidden = true;
  });
  $('#node-select').addEventListener('change', (e) => switchNode(e.target.value));
  hooks.switchNode = switchNode;
  onChange((names) => {
    updateHeader(names);
    try {
      current?.page.update?.(names);
    } catch (e) {
      console.error(e);
    }
  });

  let stored = '';
  try {
    stored = localStorage.getItem(STORAGE_KEY) ?? '';
  } catch {
    stored = '';
  }
  if (stored) {
    state.nodeName = stored;
    state.base = `/nodes/${encodeURIComponent(stored)}`;
  }
  renderNodeSelect();
  setConnection('connecting');
  window.addEventListener('hashchange', route);
  route();
  openEvents();
  load(HEADER_NEEDS);
  poll();
  setInterval(() => {
    if (!document.hidden || state.connection !== 'connected') poll();
  }, 1000);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
else start();
