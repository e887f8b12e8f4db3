// Nodes: the other nodes this dashboard steers (a roof antenna, a home router, a laptop) — each reached through the
// node serving the page — side by side as cards, the list with its reachability, and a form to add one.

import {
  h, api, act, badge, card, clean, fill, fmtInt, hooks, load, setText, shortAddr, state, syncRows, table, setBadge, trackDirty,
} from './core.js';

let els = null;
let timer = 0;
let round = 0;

function baseOf(name) {
  return name ? `/nodes/${encodeURIComponent(name)}` : '';
}

function mount(root) {
  const cards = h('div', { id: 'node-cards', class: 'node-cards' });
  const list = table('dashboard-nodes', ['Name', 'API', 'Reachable', '', ''], { caption: 'Nodes of this dashboard' });
  const name = trackDirty(h('input', { id: 'add-node-name', name: 'add-node-name', required: true, placeholder: 'roof', autocomplete: 'off', spellcheck: 'false', maxlength: '32' }));
  const apiInput = trackDirty(h('input', { id: 'add-node-api', name: 'add-node-api', required: true, placeholder: '192.168.1.20:7300', autocomplete: 'off', spellcheck: 'false' }));
  const token = h('input', { id: 'add-node-token', name: 'add-node-token', type: 'password', required: true, autocomplete: 'off', spellcheck: 'false' });
  const add = h('button', { type: 'submit', id: 'add-node' }, 'Add node');
  const form = h('form', { id: 'add-node-form', class: 'form-grid' },
    h('label', { for: 'add-node-name' }, 'Name (letters, digits, . _ -)'), name,
    h('label', { for: 'add-node-api' }, 'Its local API (IP address:port)'), apiInput,
    h('label', { for: 'add-node-token' }, 'Its API token (api.token in its data directory, or `skymesh dashboard` there)'), token,
    h('div', { class: 'form-actions' }, add));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim(), api: apiInput.value.trim(), token: token.value.trim() };
    const result = await act(add, () => api('/api/dashboard/nodes', { method: 'POST', body, base: '' }), { busy: 'Adding', done: `Node ${body.name} added` });
    if (result.ok) {
      name.value = '';
      apiInput.value = '';
      token.value = '';
      clean(name, apiInput);
      await load(['dashboardNodes']);
      refreshCards();
    }
  });
  root.append(
    h('h1', { tabindex: '-1' }, 'Nodes'),
    card('Side by side', { id: 'node-cards-card' },
      h('p', { class: 'muted' }, 'Choose a card to watch and steer that node on every page (the same as the node menu in the header).'),
      cards),
    card('Nodes of this dashboard', { id: 'dashboard-nodes-card' },
      h('p', { class: 'muted' }, 'The page reaches each through the node serving it, which holds their tokens; the browser holds none.'),
      list.wrap),
    card('Add a node', { id: 'add-node-card' }, form));
  els = { cards, list: list.tbody, cardEls: new Map() };
  update(new Set(['dashboardNodes']));
  refreshCards();
  timer = setInterval(() => {
    if (!document.hidden) {
      load(['dashboardNodes']);
      refreshCards();
    }
  }, 10_000);
}

function cardFor(nodeName) {
  let el = els.cardEls.get(nodeName);
  if (el) return el;
  el = h('button', { type: 'button', class: 'node-card', 'data-name': nodeName },
    h('span', { class: 'node-card-name' }, nodeName || 'this node'),
    h('code', { class: 'node-card-address addr' }, '…'),
    badge('…', 'node-card-reach', 'neutral'),
    h('dl', { class: 'node-card-facts' },
      h('div', null, h('dt', null, 'Links up'), h('dd', { class: 'f-links' }, '—')),
      h('div', null, h('dt', null, 'Paths'), h('dd', { class: 'f-paths' }, '—')),
      h('div', null, h('dt', null, 'Decisions waiting'), h('dd', { class: 'f-pending' }, '—')),
      h('div', null, h('dt', null, 'Control'), h('dd', { class: 'f-control' }, badge('—', 'control-state', 'neutral')))),
    h('span', { class: 'node-card-watching' }, 'watching'));
  el.addEventListener('click', () => hooks.switchNode(nodeName));
  els.cardEls.set(nodeName, el);
  return el;
}

async function refreshCards() {
  if (!els) return;
  const mine = ++round;
  const names = ['', ...(Array.isArray(state.data.dashboardNodes) ? state.data.dashboardNodes.map((n) => n.name) : [])];
  const wanted = new Set(names);
  for (const [key, el] of els.cardEls) {
    if (!wanted.has(key)) {
      el.remove();
      els.cardEls.delete(key);
    }
  }
  fill(els.cards, names.map(cardFor));
  for (const [key, el] of els.cardEls) {
    const watching = key === state.nodeName;
    el.classList.toggle('current', watching);
    el.setAttribute('aria-pressed', String(watching));
  }
  await Promise.all(names.map(async (nodeName) => {
    const base = baseOf(nodeName);
    const [node, decisions] = await Promise.allSettled([api('/api/node', { base }), api('/api/decisions', { base })]);
    if (!els || mine !== round) return;
    const el = els.cardEls.get(nodeName);
    if (!el) return;
    const n = node.status === 'fulfilled' ? node.value : null;
    setText(el.querySelector('.node-card-address'), n ? shortAddr(n.address) : '—');
    el.querySelector('.node-card-address').title = n?.address ?? '';
    setBadge(el.querySelector('.node-card-reach'), n ? 'reachable' : 'unreachable');
    el.querySelector('.node-card-reach').title = n ? '' : node.reason?.message ?? '';
    setText(el.querySelector('.f-links'), n ? fmtInt(n.links) : '—');
    setText(el.querySelector('.f-paths'), n ? fmtInt(n.paths) : '—');
    const pending = decisions.status === 'fulfilled' ? decisions.value?.pending?.length ?? 0 : null;
    setText(el.querySelector('.f-pending'), pending == null ? '—' : String(pending));
    el.querySelector('.f-pending').dataset.count = pending == null ? '' : String(pending);
    setBadge(el.querySelector('.control-state'), n?.control ?? '—');
    el.setAttribute('aria-label', `${nodeName || 'this node'}: ${n ? `${shortAddr(n.address)}, ${n.links} links up, ${n.paths} paths, ${pending ?? 'unknown'} decisions waiting, control ${n.control}` : 'unreachable'}${nodeName === state.nodeName ? ' (watching)' : ''}`);
  }));
}

function update(names = new Set()) {
  if (!els) return;
  const list = Array.isArray(state.data.dashboardNodes) ? state.data.dashboardNodes : [];
  syncRows(els.list, list, (n) => n.name, (n) => {
    const remove = h('button', { type: 'button', class: 'small danger', 'data-action': 'remove-node', 'data-name': n.name, 'aria-label': `Remove node ${n.name}` }, 'Remove');
    remove.addEventListener('click', async () => {
      const result = await act(remove, () => api(`/api/dashboard/nodes/${encodeURIComponent(n.name)}`, { method: 'DELETE', base: '' }), { done: `Node ${n.name} removed` });
      if (result.ok) {
        if (state.nodeName.toLowerCase() === n.name.toLowerCase()) hooks.switchNode('');
        await load(['dashboardNodes']);
        refreshCards();
      }
    });
    const watch = h('button', { type: 'button', class: 'small', 'data-action': 'watch-node', 'data-name': n.name, 'aria-label': `Watch node ${n.name}` }, 'Watch');
    watch.addEventListener('click', () => hooks.switchNode(n.name));
    return h('tr', { 'data-name': n.name },
      h('th', { scope: 'row' }, n.name), h('td', { class: 'c-api' }),
      h('td', null, badge('', 'node-reachable'), h('small', { class: 'block muted c-error' })),
      h('td', { class: 'actions' }, watch), h('td', { class: 'actions' }, remove));
  }, (row, n) => {
    setText(row.querySelector('.c-api'), n.api);
    setBadge(row.querySelector('.node-reachable'), n.reachable === true ? 'reachable' : n.reachable === false ? 'unreachable' : 'unknown');
    setText(row.querySelector('.c-error'), n.error ?? '');
  }, state.errors.dashboardNodes ? `The list is unavailable: ${state.errors.dashboardNodes.message}` : 'No other nodes yet. Add one below.');
  if (names.has('dashboardNodes')) {
    const known = [...els.cardEls.keys()].filter(Boolean).sort().join();
    const now = list.map((n) => n.name).sort().join();
    if (known !== now) refreshCards();
  }
}

export default {
  id: 'nodes',
  title: 'Nodes',
  needs: ['dashboardNodes'],
  mount,
  update,
  unmount() {
    clearInterval(timer);
    round++;
    els = null;
  },
};
