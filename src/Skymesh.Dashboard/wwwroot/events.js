// Events: everything the node reports, live, newest first — filtered by text and kind, paused while being read.

import {
  h, addr, badge, card, fill, fmtDateTime, fmtTime, kindTone, MAX_EVENTS, onEvents, setText, state,
} from './core.js';

const GROUPS = [
  ['Links', ['LinkUp', 'LinkDown', 'HandshakeRefused']],
  ['Paths', ['PathSetUp', 'PathRepaired', 'PathBroken', 'PathClosed']],
  ['Announcements', ['AnnouncementAccepted', 'AnnouncementRefused']],
  ['Receipts and credit', ['ReceiptSent', 'ReceiptAccepted', 'ReceiptRefused', 'CreditNormal', 'CreditThrottled', 'CreditSuspended', 'SettlementRefused']],
  ['Apps', ['AppStarted', 'AppStopped']],
  ['Control plane', ['ControlConnected', 'ControlLost']],
  ['Decisions and settings', ['DecisionPending', 'DecisionResolved', 'SettingsChanged', 'NodeBlocked', 'NodeUnblocked']],
  ['Interfaces', ['InterfaceUp', 'InterfaceDown']],
  ['Stream', ['Missed']],
];

const FREQUENT = /^(Announcement|Receipt)/;

let els = null;
let unsubscribe = null;
let paused = false;
let waiting = 0;

function matcher() {
  const text = els.filter.value.trim().toLowerCase();
  const kind = els.kind.value;
  const group = kind.startsWith('group:') ? GROUPS.find(([name]) => name === kind.slice(6))?.[1] : null;
  const hideFrequent = els.hideFrequent.checked;
  return (e) => {
    if (hideFrequent && FREQUENT.test(e.kind)) return false;
    if (group ? !group.includes(e.kind) : kind && e.kind !== kind) return false;
    if (!text) return true;
    return [e.kind, e.peer, e.detail, e.link != null ? `link ${e.link}` : '', e.path != null ? `path ${e.path}` : '', e.app != null ? `app ${e.app}` : '']
      .some((v) => v && String(v).toLowerCase().includes(text));
  };
}

function item(e) {
  const ids = [];
  if (e.link != null) ids.push(`link ${e.link}`);
  if (e.path != null) ids.push(`path ${e.path}`);
  if (e.app != null) ids.push(`app ${e.app}`);
  return h('li', { class: 'event', 'data-kind': e.kind, 'data-sequence': e.seq || null },
    h('time', { datetime: e.at, title: fmtDateTime(e.at) }, fmtTime(e.at)),
    badge(e.kind, 'event-kind', kindTone(e.kind)),
    e.peer ? addr(e.peer, { class: 'addr event-peer' }) : h('span', { class: 'event-peer muted' }, '—'),
    h('span', { class: 'event-ids muted' }, ids.join(' · ')),
    h('span', { class: 'event-detail' }, e.detail ?? ''));
}

function renderAll() {
  const match = matcher();
  const list = [];
  for (let i = state.events.length - 1; i >= 0 && list.length < MAX_EVENTS; i--) {
    const e = state.events[i];
    if (match(e)) list.push(item(e));
  }
  fill(els.list, list);
  waiting = 0;
  renderCount();
}

function renderCount() {
  const shown = els.list.children.length;
  setText(els.count, paused
    ? `Paused — ${waiting} new event${waiting === 1 ? '' : 's'} not shown. ${shown} shown.`
    : `${shown} of ${state.events.length} events shown${shown ? '' : state.events.length ? ' (the filter hides the others)' : ' — none yet'}.`);
}

function mount(root) {
  const filter = h('input', { id: 'event-filter', type: 'search', name: 'event-filter', placeholder: 'kind, peer or detail', autocomplete: 'off', spellcheck: 'false' });
  const kind = h('select', { id: 'event-kind', name: 'event-kind' },
    h('option', { value: '' }, 'All kinds'),
    GROUPS.map(([name, kinds]) => h('optgroup', { label: name },
      h('option', { value: `group:${name}` }, `All: ${name.toLowerCase()}`),
      kinds.map((k) => h('option', { value: k }, k)))));
  const hideFrequent = h('input', { id: 'event-hide-frequent', type: 'checkbox', name: 'event-hide-frequent' });
  const pause = h('button', { type: 'button', id: 'events-pause', 'aria-pressed': 'false' }, 'Pause');
  const count = h('p', { id: 'events-count', class: 'muted', 'aria-live': 'polite' });
  const list = h('ul', { id: 'events-list', class: 'event-list' });
  paused = false;
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    setText(pause, paused ? 'Resume' : 'Pause');
    if (!paused) renderAll();
    else renderCount();
  });
  let filterTimer = 0;
  filter.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(renderAll, 120);
  });
  kind.addEventListener('change', renderAll);
  hideFrequent.addEventListener('change', renderAll);
  root.append(
    h('h1', { tabindex: '-1' }, 'Events'),
    card('Live events', { id: 'events-card' },
      h('div', { class: 'toolbar' },
        h('label', { for: 'event-filter' }, 'Filter'), filter,
        h('label', { for: 'event-kind' }, 'Kind'), kind,
        h('span', { class: 'check' }, hideFrequent, h('label', { for: 'event-hide-frequent' }, 'Hide announcements and receipts')),
        pause),
      count,
      list));
  els = { filter, kind, hideFrequent, list, count };
  renderAll();
  unsubscribe = onEvents((fresh) => {
    if (!els) return;
    if (paused) {
      waiting += fresh.length;
      renderCount();
      return;
    }
    const match = matcher();
    for (const e of fresh) if (match(e)) els.list.prepend(item(e));
    while (els.list.children.length > MAX_EVENTS) els.list.lastElementChild.remove();
    renderCount();
  });
}

export default {
  id: 'events',
  title: 'Events',
  needs: [],
  mount,
  update() {},
  unmount() {
    unsubscribe?.();
    unsubscribe = null;
    els = null;
  },
};
