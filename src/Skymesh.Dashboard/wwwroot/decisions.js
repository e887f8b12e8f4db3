// Decisions: what waits for the node's owner (a stranger asking to link, a neighbour at its credit limit, a peer asking
// for a destination the exit rules do not allow, a dear path), what was decided lately, and the automatic policies.

import {
  h, api, act, addr, badge, card, fill, fmtCoins, fmtDateTime, fmtPrice, fmtTime, intFrom, load, setValue, state,
  syncRows, table, trackDirty, clean, unavailable,
} from './core.js';

const KIND_LABELS = { neighbour: 'New neighbour', credit: 'Credit limit', exit: 'Exit', price: 'Path price' };

const CHOICE_LABELS = {
  accept: 'Accept', refuse: 'Refuse', block: 'Block', raise: 'Raise limit', keep: 'Keep limit', suspend: 'Suspend',
  'allow-port': 'Allow this port', pay: 'Pay', other: 'Find another path',
};

/** What a decision is about, from its kind-specific data. */
function facts(d) {
  const data = d.data || {};
  const rows = [];
  const add = (term, value) => {
    if (value != null && value !== '') rows.push(h('div', null, h('dt', null, term), h('dd', null, value)));
  };
  switch (d.kind) {
    case 'neighbour':
      add('Endpoint', data.endpoint);
      add('Interface', data.interface);
      break;
    case 'credit':
      add('Limit', data.limit != null ? fmtCoins(data.limit) : null);
      add('Owed', data.owed != null ? fmtCoins(data.owed) : null);
      break;
    case 'exit':
      add('Target', data.target);
      add('Port', data.port != null ? String(data.port) : null);
      break;
    case 'price':
      add('To', data.to ? addr(data.to) : null);
      add('Price', data.price != null ? fmtPrice(data.price) : null);
      add('Cap', data.cap != null ? fmtPrice(data.cap) : null);
      if (Array.isArray(data.nodes) && data.nodes.length) add('Through', h('span', { class: 'addr-list' }, data.nodes.map((n) => addr(n))));
      break;
    default:
      break;
  }
  return rows.length ? h('dl', { class: 'facts' }, rows) : null;
}

/** One pending decision with a button per choice (and the new limit beside "raise"). */
export function decisionCard(d, { compact = false } = {}) {
  const choices = h('div', { class: 'decision-choices' });
  for (const choice of d.choices || []) {
    const button = h('button', { type: 'button', class: `choice choice-${choice}`, 'data-choice': choice }, CHOICE_LABELS[choice] ?? choice);
    button.addEventListener('click', () => choose(button, d, choice));
    if (choice === 'raise') {
      const limit = Number(d.data?.limit);
      const id = `raise-${compact ? 'strip' : 'page'}-${d.id}`;
      const input = h('input', {
        type: 'number', name: 'value', id, min: '0', step: '1', inputmode: 'numeric', class: 'raise-value',
        value: Number.isFinite(limit) && limit > 0 ? String(limit * 2) : '',
      });
      choices.append(h('span', { class: 'raise' }, h('label', { for: id }, 'New limit (micro-units)'), input, button));
    } else {
      choices.append(button);
    }
  }
  const created = d.created ? h('time', { datetime: d.created, class: 'muted' }, fmtTime(d.created)) : null;
  return h('article', {
    class: `decision${compact ? ' compact' : ''}`, 'data-decision-id': d.id, 'data-kind': d.kind, 'data-peer': d.peer ?? '',
    'aria-label': d.summary || `decision ${d.id}`,
  },
  h('div', { class: 'decision-head' },
    badge(KIND_LABELS[d.kind] ?? d.kind, 'decision-kind', 'warn'),
    h('span', { class: 'decision-summary' }, d.summary || ''),
    d.peer ? addr(d.peer, { class: 'addr decision-peer' }) : null,
    created),
  compact ? null : h('p', { class: 'decision-waiting' }, d.waiting || ''),
  compact ? null : facts(d),
  choices);
}

async function choose(button, d, choice) {
  const result = await act(button, async () => {
    const body = { choice };
    if (choice === 'raise') {
      const input = button.closest('.decision')?.querySelector('input[name="value"]');
      const value = input ? intFrom(input, 'The new limit') : null;
      if (value == null || value <= 0) {
        input?.focus();
        throw new Error('Give the new credit limit (micro-units) beside "Raise limit"');
      }
      body.value = value;
    }
    return api(`/api/decisions/${encodeURIComponent(d.id)}`, { method: 'POST', body });
  }, { busy: 'Sending', done: `Decided: ${CHOICE_LABELS[choice] ?? choice} (${d.summary || d.kind})` });
  if (result.ok) {
    // Gone from every list at once; the reload confirms it.
    for (const el of document.querySelectorAll('.decision[data-decision-id]')) {
      if (el.dataset.decisionId === String(d.id)) el.remove();
    }
    load(['decisions']);
  }
}

/** Keeps a container's .decision cards in step with a list (cards already shown are kept: their inputs survive). */
export function renderDecisionList(container, list, { compact = false, empty = 'Nothing waits for you.' } = {}) {
  const existing = new Map();
  for (const el of container.querySelectorAll(':scope > .decision')) existing.set(el.dataset.decisionId, el);
  for (const el of container.querySelectorAll(':scope > .empty')) el.remove();
  let previous = null;
  for (const d of list) {
    let el = existing.get(String(d.id));
    if (el) existing.delete(String(d.id));
    else el = decisionCard(d, { compact });
    const next = previous ? previous.nextSibling : container.firstChild;
    if (el !== next) container.insertBefore(el, next);
    previous = el;
  }
  for (const el of existing.values()) el.remove();
  if (!list.length && empty) container.append(h('p', { class: 'empty muted' }, empty));
}

// ---------------------------------------------------------------------------------------------------------------------
// The page

const POLICY_OPTIONS = {
  neighbours: [['accept', 'Accept them'], ['ask', 'Ask me'], ['refuse', 'Refuse them']],
  credit: [['keep', 'Keep the limit (suspended until it pays)'], ['ask', 'Ask me']],
  exits: [['refuse', 'Refuse'], ['ask', 'Ask me']],
  price: [['pay', 'Pay it'], ['cheaper', 'Take a cheaper path'], ['ask', 'Ask me']],
};

let els = null;

function select(id, options) {
  return trackDirty(h('select', { id, name: id }, options.map(([value, text]) => h('option', { value }, text))));
}

function mount(root) {
  const pending = h('div', { id: 'pending-decisions', class: 'decision-list' });
  const recent = table('recent-decisions', ['Decided', 'Kind', 'Peer', 'Summary', 'Choice', 'By'], { caption: 'Recently decided' });
  const form = h('form', { id: 'policies-form', class: 'form-grid' });
  const fields = {
    neighbours: select('policy-neighbours', POLICY_OPTIONS.neighbours),
    credit: select('policy-credit', POLICY_OPTIONS.credit),
    exits: select('policy-exits', POLICY_OPTIONS.exits),
    price: select('policy-price', POLICY_OPTIONS.price),
    maxPrice: trackDirty(h('input', { id: 'policy-max-price', type: 'number', min: '0', step: '1', inputmode: 'numeric', placeholder: 'no cap' })),
  };
  const save = h('button', { id: 'save-policies', type: 'submit' }, 'Save policies');
  form.append(
    h('label', { for: 'policy-neighbours' }, 'A node that is not a configured peer asks to link'), fields.neighbours,
    h('label', { for: 'policy-credit' }, 'A neighbour reaches its credit limit'), fields.credit,
    h('label', { for: 'policy-exits' }, 'A peer asks for a destination the exit rules do not allow'), fields.exits,
    h('label', { for: 'policy-price' }, 'A path costs more than the cap'), fields.price,
    h('label', { for: 'policy-max-price' }, 'Cap on a path\u2019s price (micro-units per MiB; empty: no cap)'), fields.maxPrice,
    h('div', { class: 'form-actions' }, save));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const result = await act(save, async () => {
      const cap = intFrom(fields.maxPrice, 'The cap');
      if (cap != null && cap < 0) throw new Error('The cap cannot be negative');
      return api('/api/decisions/policies', {
        method: 'PUT',
        body: {
          neighbours: fields.neighbours.value, credit: fields.credit.value, exits: fields.exits.value, price: fields.price.value,
          maxPathPrice: cap ?? -1,
        },
      });
    }, { busy: 'Saving', done: 'Policies saved' });
    if (result.ok) {
      clean(...Object.values(fields));
      if (state.data.decisions && result.value) state.data.decisions.policies = result.value;
      load(['decisions']);
    }
  });

  const status = h('div', { class: 'status-line' });
  root.append(
    h('h1', { tabindex: '-1' }, 'Decisions'),
    status,
    card('Waiting for you', { id: 'pending-card' }, pending),
    card('Recently decided', { id: 'recent-card' }, recent.wrap),
    card('Automatic policies', { id: 'policies-card' },
      h('p', { class: 'muted' }, 'What the node decides by itself when nobody is asked. \u201CAsk me\u201D puts the question here and in the strip under the header.'),
      form));
  els = { pending, recent: recent.tbody, fields, status };
  update();
}

function update() {
  if (!els) return;
  const view = state.data.decisions;
  const error = state.errors.decisions;
  fill(els.status, error && !view ? unavailable(error, 'Decisions') : null);
  renderDecisionList(els.pending, view?.pending ?? []);
  const recent = [...(view?.recent ?? [])].sort((a, b) => String(b.resolved ?? '').localeCompare(String(a.resolved ?? '')));
  syncRows(els.recent, recent, (d) => d.id, (d) => h('tr', { 'data-decision-id': d.id, 'data-kind': d.kind },
    h('td', null, d.resolved ? h('time', { datetime: d.resolved, title: fmtDateTime(d.resolved) }, fmtTime(d.resolved)) : '—'),
    h('td', null, KIND_LABELS[d.kind] ?? d.kind),
    h('td', null, d.peer ? addr(d.peer) : '—'),
    h('td', null, d.summary ?? ''),
    h('td', null, badge(CHOICE_LABELS[d.choice] ?? d.choice ?? '—', 'decision-choice', 'neutral')),
    h('td', null, d.by ?? '—')), () => {}, 'Nothing decided yet.');
  const p = view?.policies;
  if (p) {
    setValue(els.fields.neighbours, p.neighbours);
    setValue(els.fields.credit, p.credit);
    setValue(els.fields.exits, p.exits);
    setValue(els.fields.price, p.price);
    setValue(els.fields.maxPrice, p.maxPathPrice ?? '');
  }
}

export default {
  id: 'decisions',
  title: 'Decisions',
  needs: ['decisions'],
  mount,
  update,
  unmount() {
    els = null;
  },
};

export { CHOICE_LABELS, KIND_LABELS };
