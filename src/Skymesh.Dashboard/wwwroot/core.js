// Skymesh dashboard: what every page shares — the state of the node being watched, the API, loading and refreshing
// data, DOM helpers that never parse strings as HTML, number formats, and the toast.

/** Every kind of event a node reports (PascalCase, as the event stream names them). */
export const KINDS = [
  'LinkUp', 'LinkDown', 'HandshakeRefused', 'PathSetUp', 'PathRepaired', 'PathBroken', 'PathClosed',
  'AnnouncementAccepted', 'AnnouncementRefused', 'ReceiptSent', 'ReceiptAccepted', 'ReceiptRefused',
  'CreditNormal', 'CreditThrottled', 'CreditSuspended', 'AppStarted', 'AppStopped', 'ControlConnected', 'ControlLost',
  'SettlementRefused', 'DecisionPending', 'DecisionResolved', 'InterfaceUp', 'InterfaceDown', 'NodeBlocked',
  'NodeUnblocked', 'SettingsChanged', 'VpnUp', 'VpnDown',
];

const KIND_BY_LOWER = new Map(KINDS.map((k) => [k.toLowerCase(), k]));

/** A kind as the stream or the data spell it (PascalCase or camelCase), in PascalCase. */
export function normaliseKind(kind) {
  if (kind == null || kind === '') return 'Unknown';
  const text = String(kind);
  return KIND_BY_LOWER.get(text.toLowerCase()) ?? text.charAt(0).toUpperCase() + text.slice(1);
}

/** Events that touch the books (the Payments page's history). */
export function isPaymentKind(kind) {
  return /^(Receipt|Credit|Settlement)/.test(kind);
}

// ---------------------------------------------------------------------------------------------------------------------
// State

export const state = {
  /** '' for the node serving the page, '/nodes/NAME' for another one reached through it. */
  base: '',
  /** The name of that other node ('' for this one). */
  nodeName: '',
  /** Grows each time the node changes, so answers for the node before are dropped. */
  gen: 0,
  /** The API's answers by resource name (see RESOURCES). */
  data: {},
  /** The last error of each resource, or null. */
  errors: {},
  /** Events, oldest first, at most MAX_EVENTS. */
  events: [],
  /** Traffic samples {t (ms), in, out (bytes/s)} of the last minute. */
  traffic: [],
  lastCounters: null,
  /** 'connecting', 'connected' or 'lost'. */
  connection: 'connecting',
  /** Resources the current page and the header show. */
  needs: new Set(),
};

export const MAX_EVENTS = 2000;

/** Functions app.js provides to the pages (switching node). */
export const hooks = {
  switchNode: (_name) => {},
};

// ---------------------------------------------------------------------------------------------------------------------
// API

export class ApiError extends Error {
  /** code: a machine-readable reason when the API gives one (the exchange's error code on the Exchange page). */
  constructor(message, status, title, code) {
    super(message);
    this.status = status;
    this.title = title;
    this.code = code ?? null;
  }
}

/** Where the page is watching, for messages. */
export function nodeLabel() {
  return state.nodeName ? `node ${state.nodeName}` : 'the node';
}

/**
 * Calls the API of the node watched (or of `base`). Requests that change something carry a JSON body ({} when there is
 * nothing to say). Resolves to the parsed answer (null for 204); rejects with an ApiError whose message is the problem's
 * detail.
 */
export async function api(path, { method = 'GET', body, base } = {}) {
  const prefix = base ?? state.base;
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET' && method !== 'HEAD') {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(prefix + path, init);
  } catch (e) {
    throw new ApiError(`${prefix ? `node ${decodeURIComponent(prefix.slice(7))}` : 'the node'} is unreachable (${e.message})`, 0, 'Network error');
  }
  const type = response.headers.get('Content-Type') || '';
  if (!response.ok) {
    let title = response.statusText || 'Error';
    let detail = '';
    let code = null;
    try {
      if (type.includes('json')) {
        const problem = await response.json();
        title = problem.title || title;
        detail = problem.detail || problem.title || '';
        code = typeof problem.code === 'string' ? problem.code : null;
      } else {
        detail = (await response.text()).trim().slice(0, 300);
      }
    } catch {
      // An unreadable body: the status says enough.
    }
    throw new ApiError(detail || `${response.status} ${title}`, response.status, title, code);
  }
  if (response.status === 204) return null;
  const text = await response.text();
  if (text === '') return null;
  try {
    return JSON.parse(text);
  } catch {
    // A stream of JSON lines (an app that was started): its first line.
    try {
      return JSON.parse(text.split('\n')[0]);
    } catch {
      return text;
    }
  }
}

/** Is this error the node saying it has no control plane (or not yet)? */
export function isNoControl(error) {
  return error instanceof ApiError && (error.status === 409 || error.status === 503);
}

// ---------------------------------------------------------------------------------------------------------------------
// Resources: loading, refreshing on events, telling the pages

export const RESOURCES = {
  node: { path: '/api/node' },
  interfaces: { path: '/api/interfaces', map: sampleTraffic },
  links: { path: '/api/links' },
  paths: { path: '/api/paths' },
  balance: { path: '/api/balance' },
  // A large mesh is big to fetch, and its announcements frequent: at most every 2 s then.
  mesh: { path: '/api/nodes', minInterval: () => ((state.data.mesh?.length ?? 0) > 200 ? 2000 : 0) },
  apps: { path: '/api/apps' },
  decisions: { path: '/api/decisions' },
  neighbours: { path: '/api/neighbours' },
  blocks: { path: '/api/blocks' },
  settings: { path: '/api/settings' },
  dashboardNodes: { path: '/api/dashboard/nodes', local: true },
  exchange: { path: '/api/exchange' },
  vpn: { path: '/api/vpn' },
};

const inflight = new Map();
const again = new Set();
const stale = new Set();
const loadedAt = new Map();

/** Loads resources by name (all at once); resolves when every one has answered. */
export function load(names) {
  return Promise.all([...new Set(names)].filter((n) => RESOURCES[n]).map(loadOne)).then(() => undefined);
}

function loadOne(name) {
  if (inflight.has(name)) {
    again.add(name);
    return inflight.get(name);
  }
  const gen = state.gen;
  const resource = RESOURCES[name];
  loadedAt.set(name, Date.now());
  // Fresh as of now: an event that arrives while this request is under way marks it stale again, and is not lost when
  // the answer (from before the event) comes back.
  stale.delete(name);
  const promise = api(resource.path, { base: resource.local ? '' : state.base })
    .then(
      (value) => {
        if (gen !== state.gen) return;
        state.data[name] = resource.map ? resource.map(value) : value;
        state.errors[name] = null;
      },
      (error) => {
        if (gen !== state.gen) return;
        state.errors[name] = error;
        // A resource the node does not have (no control plane, older node): nothing to show. A node that does not
        // answer: keep what was shown, the banner says it is stale.
        if (error.status && error.status !== 502 && error.status !== 504) state.data[name] = undefined;
      },
    )
    .finally(() => {
      inflight.delete(name);
      if (gen !== state.gen) return;
      changed(name);
      if (again.delete(name)) loadOne(name);
    });
  inflight.set(name, promise);
  return promise;
}

let flushTimer = 0;
let lastFlush = 0;

/** Marks resources as out of date; those shown are reloaded soon (at most twice a second), the others when shown. */
export function invalidate(names) {
  for (const n of names) stale.add(n);
  if (!flushTimer) {
    const wait = Math.max(150, 500 - (Date.now() - lastFlush));
    flushTimer = setTimeout(flush, wait);
  }
}

function flush() {
  flushTimer = 0;
  lastFlush = Date.now();
  const wanted = [];
  let later = 0;
  for (const name of stale) {
    if (!state.needs.has(name)) continue;
    const gap = RESOURCES[name]?.minInterval?.() ?? 0;
    const wait = (loadedAt.get(name) ?? 0) + gap - Date.now();
    if (wait > 0) later = Math.max(later, wait);
    else wanted.push(name);
  }
  if (wanted.length) load(wanted);
  if (later > 0) flushTimer = setTimeout(flush, later);
}

/** Forgets everything about the node watched (the page switched to another node). */
export function resetData(keep = ['dashboardNodes']) {
  state.gen++;
  for (const key of Object.keys(state.data)) if (!keep.includes(key)) delete state.data[key];
  for (const key of Object.keys(state.errors)) if (!keep.includes(key)) delete state.errors[key];
  state.events = [];
  state.traffic = [];
  state.lastCounters = null;
  stale.clear();
  again.clear();
  inflight.clear();
  loadedAt.clear();
}

const changeListeners = new Set();
let pendingChanges = new Set();
let changeTimer = 0;

/** Calls fn(Set of resource names) after resources were (re)loaded. */
export function onChange(fn) {
  changeListeners.add(fn);
  return () => changeListeners.delete(fn);
}

export function changed(name) {
  pendingChanges.add(name);
  if (!changeTimer) {
    changeTimer = setTimeout(() => {
      changeTimer = 0;
      const names = pendingChanges;
      pendingChanges = new Set();
      for (const listener of changeListeners) {
        try {
          listener(names);
        } catch (e) {
          console.error(e);
        }
      }
    }, 0);
  }
}

const eventListeners = new Set();

/** Calls fn(array of new events, oldest first) as events arrive. */
export function onEvents(fn) {
  eventListeners.add(fn);
  return () => eventListeners.delete(fn);
}

export function emitEvents(list) {
  for (const listener of eventListeners) {
    try {
      listener(list);
    } catch (e) {
      console.error(e);
    }
  }
}

/** Bytes per second in and out, from the interfaces' counters. */
function sampleTraffic(list) {
  if (!Array.isArray(list)) return list;
  const now = performance.now();
  let bytesIn = 0;
  let bytesOut = 0;
  for (const i of list) {
    bytesIn += Number(i.bytesReceived) || 0;
    bytesOut += Number(i.bytesSent) || 0;
  }
  const last = state.lastCounters;
  if (!last) {
    state.lastCounters = { t: now, in: bytesIn, out: bytesOut };
  } else {
    const seconds = (now - last.t) / 1000;
    if (seconds >= 0.5) {
      state.traffic.push({
        t: Date.now(),
        in: Math.max(0, (bytesIn - last.in) / seconds),
        out: Math.max(0, (bytesOut - last.out) / seconds),
      });
      state.lastCounters = { t: now, in: bytesIn, out: bytesOut };
      const oldest = Date.now() - 61_000;
      while (state.traffic.length && state.traffic[0].t < oldest) state.traffic.shift();
    }
  }
  return list;
}

// ---------------------------------------------------------------------------------------------------------------------
// DOM helpers (text always goes in as text)

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden', 'selected', 'textContent', 'open', 'multiple', 'readOnly', 'required']);

/** Makes an element: props are attributes (data-* included), on* handlers, or properties; children are nodes or text. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Makes an SVG element; props are attributes. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  append(el, children);
  return el;
}

function setProps(el, props) {
  if (!props) return;
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else if (key === 'style') throw new Error('no inline styles (Content-Security-Policy)');
    else el.setAttribute(key, value === true ? '' : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Sets text only when it changed (keeps selections and avoids layout work). */
export function setText(el, text) {
  const value = text == null ? '' : String(text);
  if (el && el.textContent !== value) el.textContent = value;
}

/** A card section with a heading. */
export function card(title, props, ...children) {
  return h('section', { class: `card ${props?.class ?? ''}`.trim(), id: props?.id, 'aria-labelledby': props?.id ? `${props.id}-title` : null },
    h('h2', { id: props?.id ? `${props.id}-title` : null }, title), ...children);
}

/** A table in a horizontally scrolling box. */
export function table(id, headings, { caption } = {}) {
  const tbody = h('tbody');
  const el = h('table', { id },
    caption ? h('caption', { class: 'visually-hidden' }, caption) : null,
    h('thead', null, h('tr', null, headings.map((x) => h('th', { scope: 'col' }, x)))),
    tbody);
  return { wrap: h('div', { class: 'table-wrap', tabindex: '0', role: 'region', 'aria-label': caption || id }, el), table: el, tbody };
}

/**
 * Keeps a tbody's rows in step with items by key: rows of items gone are removed, new ones made by create(item),
 * every row then updated in place by update(row, item) (so inputs being typed in survive a refresh).
 */
export function syncRows(tbody, items, key, create, update, empty) {
  const existing = new Map();
  for (const row of [...tbody.rows]) {
    if (row.dataset.key != null) existing.set(row.dataset.key, row);
    else row.remove();
  }
  let previous = null;
  for (const item of items) {
    const k = String(key(item));
    let row = existing.get(k);
    if (row) existing.delete(k);
    else {
      row = create(item);
      row.dataset.key = k;
    }
    update(row, item);
    const next = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== next) tbody.insertBefore(row, next);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
  if (!items.length && empty) {
    const columns = tbody.closest('table')?.tHead?.rows[0]?.cells.length ?? 1;
    tbody.append(h('tr', { class: 'empty' }, h('td', { colspan: columns }, empty)));
  }
}

/** Marks an input as edited by the person (so refreshes leave its value alone until saved). */
export function trackDirty(input) {
  input.addEventListener('input', () => {
    input.dataset.dirty = '1';
  });
  return input;
}

/** Sets an input's value unless the person is editing it. */
export function setValue(input, value) {
  if (!input || input.dataset.dirty === '1' || document.activeElement === input) return;
  const text = value == null ? '' : String(value);
  if (input.value !== text) input.value = text;
}

export function clean(...inputs) {
  for (const input of inputs) if (input) delete input.dataset.dirty;
}

/** A whole number from an input, or null when it is empty; throws a message for people when it is not one. */
export function intFrom(input, what) {
  const text = input.value.trim();
  if (text === '') return null;
  if (!/^-?\d+$/.test(text)) throw new ApiError(`${what} must be a whole number`, 0, 'Invalid');
  return Number(text);
}

// ---------------------------------------------------------------------------------------------------------------------
// Messages

let noticeTimer = 0;

/** Shows an error in the toast until it is dismissed. */
export function toast(message) {
  const el = document.getElementById('toast');
  if (!el) return;
  setText(el.querySelector('.toast-text'), message);
  el.hidden = false;
}

/** Shows a short confirmation that goes away by itself. */
export function notice(message) {
  const el = document.getElementById('notice');
  if (!el) return;
  el.textContent = message;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.hidden = true;
  }, 4000);
}

/**
 * Runs an action started by the person: the button is disabled (with a counter while it takes long), an error goes to
 * the toast (unless quiet: the caller shows it beside the form). Resolves to {ok, value} or {ok: false, error}.
 */
export async function act(button, fn, { busy, done, quiet } = {}) {
  if (button?.disabled) return { ok: false };
  let original = null;
  let timer = 0;
  if (button) {
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    if (busy) {
      original = button.textContent;
      button.textContent = `${busy}…`;
      const started = Date.now();
      timer = setInterval(() => {
        button.textContent = `${busy}… ${Math.round((Date.now() - started) / 1000)} s`;
      }, 1000);
    }
  }
  try {
    const value = await fn();
    if (done) notice(typeof done === 'function' ? done(value) : done);
    return { ok: true, value };
  } catch (error) {
    if (!quiet) toast(error.message || String(error));
    return { ok: false, error };
  } finally {
    clearInterval(timer);
    if (button) {
      button.disabled = false;
      button.removeAttribute('aria-busy');
      if (original != null) button.textContent = original;
    }
  }
}

/** Copies text to the clipboard (also where the async clipboard is not available, e.g. plain http on a LAN). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = h('textarea', { class: 'offscreen', readOnly: true, 'aria-hidden': 'true' });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Formats

export function shortAddr(address) {
  if (!address) return '—';
  return address.length > 8 ? `${address.slice(0, 8)}…` : address;
}

/** An address shown short, whole in its tooltip. */
export function addr(address, props) {
  return h('code', { class: 'addr', title: address || null, ...props }, shortAddr(address));
}

export function fmtInt(n) {
  if (n == null || n === '' || Number.isNaN(Number(n))) return '—';
  return Number(n).toLocaleString('en-US');
}

export function fmtBytes(n) {
  if (n == null || Number.isNaN(Number(n))) return '—';
  let value = Number(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  if (i === 0) return `${Math.round(value)} B`;
  return `${value.toFixed(Math.abs(value) < 10 ? 2 : Math.abs(value) < 100 ? 1 : 0)} ${units[i]}`;
}

export function fmtRate(n) {
  return `${fmtBytes(n)}/s`;
}

/** Milliseconds from a .NET TimeSpan string ("00:00:00.0012345", "1.02:03:04.5"), or null. */
export function timespanMs(value) {
  if (value == null) return null;
  if (typeof value === 'number') return value;
  const m = /^(-)?(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)$/.exec(String(value));
  if (!m) return null;
  const ms = ((Number(m[2] || 0) * 24 + Number(m[3])) * 60 + Number(m[4])) * 60_000 + parseFloat(m[5]) * 1000;
  return m[1] ? -ms : ms;
}

export function fmtMs(ms) {
  if (ms == null || !Number.isFinite(Number(ms))) return '—';
  const v = Number(ms);
  if (v < 1) return `${v.toFixed(3)} ms`;
  if (v < 10) return `${v.toFixed(2)} ms`;
  if (v < 100) return `${v.toFixed(1)} ms`;
  return `${Math.round(v).toLocaleString('en-US')} ms`;
}

export function fmtMicros(us) {
  return us == null ? '—' : fmtMs(Number(us) / 1000);
}

/** A fraction (0..1) as a percentage. */
export function fmtLoss(fraction) {
  if (fraction == null || Number.isNaN(Number(fraction))) return '—';
  const p = Number(fraction) * 100;
  return `${p === 0 ? '0' : p < 0.1 ? p.toFixed(3) : p < 10 ? p.toFixed(2) : p.toFixed(1)} %`;
}

/** An amount in micro-units as coins with six decimals. */
export function fmtCoins(n) {
  if (n == null || n === '' || Number.isNaN(Number(n))) return '—';
  const v = Math.round(Number(n));
  const sign = v < 0 ? '−' : '';
  const abs = Math.abs(v);
  const whole = Math.floor(abs / 1e6);
  const fraction = abs - whole * 1e6;
  return `${sign}${whole.toLocaleString('en-US')}.${String(fraction).padStart(6, '0')}`;
}

/** A price per MiB, in micro-units as the node announces it (node.json's "price"). */
export function fmtPrice(n) {
  return n == null ? '—' : `${fmtInt(n)} µ/MiB`;
}

export function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function ageOf(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : (Date.now() - t) / 1000;
}

export function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

export function fmtDateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  return d.toLocaleString([], { hour12: false });
}

// ---------------------------------------------------------------------------------------------------------------------
// States: always a word, a colour and a shape (the shape from CSS, by tone)

const TONES = {
  up: 'ok', normal: 'ok', connected: 'ok', reachable: 'ok', live: 'ok', yes: 'ok', person: 'neutral', policy: 'neutral',
  throttled: 'warn', handshaking: 'warn', connecting: 'warn', unknown: 'neutral', pending: 'warn',
  down: 'bad', broken: 'bad', 'link down': 'bad', suspended: 'bad', unreachable: 'bad', lost: 'bad', blocked: 'bad',
  none: 'neutral', refused: 'bad',
};

export function toneOf(text) {
  return TONES[String(text ?? '').toLowerCase()] ?? 'neutral';
}

/** A state as a badge: its text is exactly the state; the icon comes from CSS. */
export function badge(text, className = '', tone) {
  return h('span', { class: `badge ${className}`.trim(), 'data-tone': tone ?? toneOf(text) }, text ?? '—');
}

export function setBadge(el, text, tone) {
  setText(el, text ?? '—');
  el.dataset.tone = tone ?? toneOf(text);
}

/** An element saying why something is not shown (no control plane, an error). */
export function unavailable(error, what) {
  if (isNoControl(error)) {
    return h('p', { class: 'unavailable', role: 'note' }, h('strong', null, 'no control plane'), ` — ${what} needs it. `, h('span', { class: 'muted' }, error.message));
  }
  return h('p', { class: 'unavailable', role: 'note' }, `${what} unavailable: ${error?.message ?? 'not loaded yet'}`);
}

/** The tone of an event kind (the badge's colour and shape; its text is the kind). */
export function kindTone(kind) {
  if (/Down$|Refused$|Broken$|Suspended$|Lost$|^NodeBlocked$|^Missed$/.test(kind)) return 'bad';
  if (/Throttled$|^DecisionPending$|^PathRepaired$|^PathClosed$/.test(kind)) return 'warn';
  if (/Up$|SetUp$|Normal$|Connected$|Accepted$|^NodeUnblocked$/.test(kind)) return 'ok';
  return 'neutral';
}
