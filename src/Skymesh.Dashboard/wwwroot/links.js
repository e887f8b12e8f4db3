// Links: one row per link to a neighbour — its state and measurements, the traffic each way, and the neighbour's
// price, credit limit and books — with the actions on it (save, suspend or resume, block, drop); below, the blocked nodes.

import {
  h, api, act, addr, badge, card, clean, fill, fmtBytes, fmtCoins, fmtInt, fmtLoss, fmtMs, intFrom, load, setBadge, setText,
  setValue, shortAddr, state, syncRows, table, timespanMs, trackDirty, unavailable,
} from './core.js';

let els = null;

function neighbourOf(peer) {
  return (state.data.neighbours ?? []).find((n) => n.peer === peer);
}

function booksOf(peer) {
  return (state.data.balance?.neighbours ?? []).find((n) => n.neighbour === peer);
}

async function saveNeighbour(row, button) {
  const peer = row.dataset.peer;
  const limit = row.querySelector('input[name="credit-limit"]');
  const result = await act(button, () => {
    const body = {};
    const c = intFrom(limit, 'The credit limit');
    if (c != null) {
      if (c < 0) throw new Error('The credit limit cannot be negative');
      body.creditLimit = c;
    }
    if (!Object.keys(body).length) throw new Error('Give a credit limit to save');
    return api(`/api/neighbours/${encodeURIComponent(peer)}`, { method: 'PUT', body });
  }, { busy: 'Saving', done: `Saved for ${shortAddr(peer)}` });
  if (result.ok) {
    clean(limit);
    load(['neighbours', 'balance']);
  }
}

async function suspendOrResume(row, button) {
  const peer = row.dataset.peer;
  const suspend = button.dataset.action === 'suspend';
  const result = await act(button, () => api(`/api/neighbours/${encodeURIComponent(peer)}`, { method: 'PUT', body: { suspended: suspend } }), {
    done: `${shortAddr(peer)} ${suspend ? 'suspended: nothing is forwarded for it' : 'resumed'}`,
  });
  if (result.ok) load(['neighbours', 'balance']);
}

export async function blockNode(node, button) {
  const result = await act(button, () => api('/api/blocks', { method: 'POST', body: { node } }), {
    done: `${shortAddr(node)} blocked: its links are dropped and it may not link again`,
  });
  if (result.ok) load(['blocks', 'links', 'neighbours']);
  return result;
}

function createRow(link) {
  const id = `link-${link.id}`;
  const limit = trackDirty(h('input', { type: 'number', name: 'credit-limit', min: '0', step: '1', inputmode: 'numeric', id: `${id}-limit`, class: 'narrow' }));
  const save = h('button', { type: 'button', class: 'small', 'data-action': 'save-neighbour' }, 'Save');
  const suspend = h('button', { type: 'button', class: 'small', 'data-action': 'suspend' }, 'Suspend');
  const block = h('button', { type: 'button', class: 'small danger', 'data-action': 'block' }, 'Block');
  const drop = h('button', { type: 'button', class: 'small danger', 'data-action': 'drop-link' }, 'Drop');
  const row = h('tr', { 'data-link-id': link.id, 'data-peer': link.peer ?? '' },
    h('th', { scope: 'row' }, h('span', { class: 'c-interface' }), h('small', { class: 'muted block' }, `link ${link.id}`)),
    h('td', null, h('span', { class: 'c-peer' }), h('small', { class: 'muted block c-remote' })),
    h('td', null, badge('', 'link-state'), h('small', { class: 'block c-reason muted' })),
    h('td', { class: 'c-rtt num' }), h('td', { class: 'c-loss num' }), h('td', { class: 'c-sent num' }), h('td', { class: 'c-received num' }),
    h('td', { class: 'c-price num' }),
    h('td', null, h('label', { class: 'visually-hidden', for: `${id}-limit` }, 'Credit limit (micro-units)'), limit),
    h('td', { class: 'c-owed num' }), h('td', { class: 'c-receipted num' }), h('td', { class: 'c-we-owe num' }),
    h('td', null, badge('', 'credit-state'), h('small', { class: 'block c-allowed muted' })),
    h('td', { class: 'actions' }, save, suspend, block, drop));
  save.addEventListener('click', () => saveNeighbour(row, save));
  suspend.addEventListener('click', () => suspendOrResume(row, suspend));
  block.addEventListener('click', () => blockNode(row.dataset.peer, block));
  drop.addEventListener('click', async () => {
    const result = await act(drop, () => api(`/api/links/${encodeURIComponent(row.dataset.linkId)}`, { method: 'DELETE' }), {
      done: `Link ${row.dataset.linkId} dropped`,
    });
    if (result.ok) load(['links', 'node']);
  });
  return row;
}

function updateRow(row, link) {
  const peer = link.peer ?? '';
  row.dataset.peer = peer;
  row.dataset.state = link.state;
  const n = peer ? neighbourOf(peer) : null;
  const books = peer ? booksOf(peer) : null;
  const settings = state.data.settings;
  setText(row.querySelector('.c-interface'), link.interface);
  const peerCell = row.querySelector('.c-peer');
  if (peerCell.dataset.peer !== peer) {
    peerCell.dataset.peer = peer;
    fill(peerCell, peer ? addr(peer) : h('span', { class: 'muted' }, 'not known yet'));
  }
  const how = link.how === 'relayed' ? ` · relayed via ${shortAddr(link.via ?? '')}` : link.how === 'punched' ? ' · punched through NATs' : '';
  setText(row.querySelector('.c-remote'), `${link.remote ?? ''}${how}${link.encrypted ? ' · encrypted' : ''}`);
  setBadge(row.querySelector('.link-state'), link.state);
  setText(row.querySelector('.c-reason'), link.state !== 'up' ? (link.downReason ?? '') : '');
  setText(row.querySelector('.c-rtt'), fmtMs(timespanMs(link.rtt)));
  setText(row.querySelector('.c-loss'), fmtLoss(link.loss));
  setText(row.querySelector('.c-sent'), fmtBytes(link.bytesSent));
  setText(row.querySelector('.c-received'), fmtBytes(link.bytesReceived));
  const limit = row.querySelector('input[name="credit-limit"]');
  // One price per node (what it charges per MiB it forwards, set on the Overview page): the same for every neighbour.
  setText(row.querySelector('.c-price'), settings?.price != null ? fmtInt(settings.price) : '—');
  setValue(limit, n?.creditLimit ?? '');
  limit.placeholder = settings?.creditLimit != null ? String(settings.creditLimit) : 'default';
  setText(row.querySelector('.c-owed'), books ? fmtCoins(books.owedToUs) : '—');
  setText(row.querySelector('.c-receipted'), books ? fmtCoins(books.receiptedAmount) : '—');
  setText(row.querySelector('.c-we-owe'), books ? fmtCoins(books.receiptedByUs) : '—');
  const credit = n?.suspended ? 'suspended' : books?.credit ?? (n ? 'normal' : '—');
  setBadge(row.querySelector('.credit-state'), credit);
  setText(row.querySelector('.c-allowed'), n?.suspended ? 'held by you' : books?.allowedBytesPerSecond != null ? `${fmtBytes(books.allowedBytesPerSecond)}/s allowed` : '');
  const suspend = row.querySelector('[data-action="suspend"], [data-action="resume"]');
  const suspended = Boolean(n?.suspended);
  if (!suspend.disabled) {
    suspend.dataset.action = suspended ? 'resume' : 'suspend';
    setText(suspend, suspended ? 'Resume' : 'Suspend');
  }
  const who = peer ? shortAddr(peer) : `link ${link.id}`;
  for (const b of row.querySelectorAll('button')) {
    const action = b.dataset.action;
    b.setAttribute('aria-label', `${b.textContent} ${action === 'drop-link' ? `link ${link.id}` : who}`);
    if (action !== 'drop-link' && !b.hasAttribute('aria-busy')) b.disabled = !peer;
  }
  limit.disabled = !peer;
}

function mount(root) {
  const links = table('links-table', [
    'Interface', 'Peer', 'State', 'RTT', 'Loss', 'Sent', 'Received', 'Price (µ/MiB)', 'Credit limit (µ)',
    'Owed to us', 'Receipted to us', 'We owe', 'Credit', '',
  ], { caption: 'Links' });
  const blocks = h('ul', { id: 'blocks-list', class: 'plain-list' });
  const blockInput = h('input', { id: 'block-address', name: 'block-address', placeholder: 'node address (64 hex digits)', autocomplete: 'off', spellcheck: 'false' });
  const blockButton = h('button', { type: 'submit', id: 'block-node', class: 'danger' }, 'Block');
  const blockForm = h('form', { id: 'block-form', class: 'inline-form' },
    h('label', { for: 'block-address' }, 'Block a node'), blockInput, blockButton);
  blockForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const node = blockInput.value.trim();
    if (!node) return;
    const result = await blockNode(node, blockButton);
    if (result.ok) blockInput.value = '';
  });
  const status = h('div', { class: 'status-line' });
  root.append(
    h('h1', { tabindex: '-1' }, 'Links'),
    status,
    card('Links to neighbours', { id: 'links-card' },
      h('p', { class: 'muted' }, 'Amounts are in coins (micro-units ÷ 1,000,000). Price and credit limit are per neighbour, in micro-units; empty means the node\u2019s default.'),
      links.wrap),
    card('Blocked nodes', { id: 'blocks-card' },
      h('p', { class: 'muted' }, 'A blocked node\u2019s links are dropped and it may not link to this node again.'),
      blocks, blockForm));
  els = { links: links.tbody, blocks, status };
  update();
}

function update() {
  if (!els) return;
  const list = Array.isArray(state.data.links) ? state.data.links : [];
  const notes = [];
  if (!state.data.links && state.errors.links) notes.push(unavailable(state.errors.links, 'Links'));
  if (state.errors.balance && !state.data.balance) notes.push(unavailable(state.errors.balance, 'The books'));
  fill(els.status, notes);
  syncRows(els.links, list, (l) => l.id, createRow, updateRow, 'No links. Connect to a peer on the Overview page.');
  const blocked = Array.isArray(state.data.blocks) ? state.data.blocks : [];
  const existing = new Map([...els.blocks.children].filter((li) => !li.classList.contains('empty')).map((li) => [li.dataset.address, li]));
  for (const address of blocked) {
    if (existing.has(address)) {
      existing.delete(address);
      continue;
    }
    const unblock = h('button', { type: 'button', class: 'small', 'data-action': 'unblock', 'data-address': address, 'aria-label': `Unblock ${shortAddr(address)}` }, 'Unblock');
    unblock.addEventListener('click', async () => {
      const result = await act(unblock, () => api(`/api/blocks/${encodeURIComponent(address)}`, { method: 'DELETE' }), { done: `${shortAddr(address)} unblocked` });
      if (result.ok) load(['blocks', 'neighbours']);
    });
    els.blocks.append(h('li', { 'data-address': address }, h('code', { class: 'addr-full' }, address), ' ', unblock));
  }
  for (const li of existing.values()) li.remove();
  const empty = els.blocks.querySelector('.empty');
  if (!blocked.length && !empty) els.blocks.append(h('li', { class: 'empty muted' }, 'No node is blocked.'));
  if (blocked.length && empty) empty.remove();
}

export default {
  id: 'links',
  title: 'Links',
  needs: ['links', 'neighbours', 'balance', 'blocks', 'settings'],
  poll: { links: 2000, balance: 3000 },
  mount,
  update,
  unmount() {
    els = null;
  },
};
