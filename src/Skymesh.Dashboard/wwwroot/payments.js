// Payments: the ledger balance, the books with each neighbour (what they owe, what their receipts cover, what is
// settled, what this node owes them), and the history of receipts, credit changes and settlements from the events.

import {
  h, addr, badge, card, fill, fmtBytes, fmtCoins, fmtDateTime, fmtInt, fmtTime, isPaymentKind, kindTone, onEvents, setBadge, setText,
  state, syncRows, table, unavailable,
} from './core.js';

const HISTORY = 300;

let els = null;
let unsubscribe = null;

function mount(root) {
  const summary = h('dl', { id: 'balance-summary', class: 'counters' });
  const books = table('books-table', [
    'Neighbour', 'Credit', 'Forwarded for them', 'Receipted bytes', 'Owed to us', 'Receipted to us', 'Settled to us',
    'We owe (our receipts)', 'Settled by us', 'Handed to them', 'Receipts we signed', 'Allowed rate', 'Credit drops',
  ], { caption: 'Books per neighbour' });
  const history = h('ol', { id: 'payment-events', class: 'event-list' });
  const status = h('div', { class: 'status-line' });
  root.append(
    h('h1', { tabindex: '-1' }, 'Payments'),
    status,
    card('Ledger', { id: 'ledger-card' }, summary),
    card('Books per neighbour', { id: 'books-card' },
      h('p', { class: 'muted' }, 'Amounts in coins (micro-units ÷ 1,000,000). A neighbour that owes more than its credit limit beyond its receipts is throttled, then suspended.'),
      books.wrap),
    card('Receipts, credit and settlements', { id: 'payment-history-card' },
      h('p', { class: 'muted' }, `The latest ${HISTORY} payment events of this node, newest first (from the event stream).`),
      history));
  els = { summary, books: books.tbody, history, status };
  renderHistory();
  unsubscribe = onEvents((list) => {
    if (!els) return;
    const fresh = list.filter((e) => isPaymentKind(e.kind));
    for (const e of fresh) els.history.prepend(eventItem(e));
    if (fresh.length) els.history.querySelector('.empty')?.remove();
    while (els.history.children.length > HISTORY) els.history.lastElementChild.remove();
  });
  update();
}

function eventItem(e) {
  return h('li', { class: 'event', 'data-kind': e.kind },
    h('time', { datetime: e.at, title: fmtDateTime(e.at) }, fmtTime(e.at)),
    badge(e.kind, 'event-kind', kindTone(e.kind)),
    e.peer ? addr(e.peer) : h('span', { class: 'muted' }, '—'),
    h('span', { class: 'event-ids muted' }, [e.link != null ? `link ${e.link}` : '', e.path != null ? `path ${e.path}` : ''].filter(Boolean).join(' · ')),
    h('span', { class: 'event-detail' }, e.detail ?? ''));
}

function renderHistory() {
  const list = state.events.filter((e) => isPaymentKind(e.kind)).slice(-HISTORY).reverse();
  fill(els.history, list.length ? list.map(eventItem) : h('li', { class: 'empty muted' }, 'No receipts or settlements yet.'));
}

function update() {
  if (!els) return;
  const balance = state.data.balance;
  const error = state.errors.balance;
  fill(els.status, !balance && error ? unavailable(error, 'The books') : null);
  const facts = [
    ['Balance', balance ? fmtCoins(balance.balance) : '—'],
    ['Ledger', balance?.ledger || '—'],
    ['Receipts accepted', balance ? fmtInt(balance.receiptsAccepted) : '—'],
    ['Receipts refused', balance ? fmtInt(balance.receiptsRefused) : '—'],
    ['Settlements refused', balance ? fmtInt(balance.settlementsRefused ?? 0) : '—'],
  ];
  if (els.summary.children.length !== facts.length) {
    fill(els.summary, facts.map(([term]) => h('div', null, h('dt', null, term), h('dd', { 'data-fact': term }))));
  }
  facts.forEach(([term, value], i) => setText(els.summary.children[i].querySelector('dd'), value));
  const neighbours = balance?.neighbours ?? [];
  syncRows(els.books, neighbours, (n) => n.neighbour, (n) => h('tr', { 'data-peer': n.neighbour },
    h('th', { scope: 'row' }, addr(n.neighbour)),
    h('td', null, badge('', 'credit-state')),
    ...['forwarded', 'receipted-bytes', 'owed', 'receipted', 'settled', 'we-owe', 'settled-by-us', 'handed', 'signed', 'allowed', 'drops']
      .map((c) => h('td', { class: `c-${c} num` }))), (row, n) => {
    setBadge(row.querySelector('.credit-state'), n.credit ?? 'normal');
    const set = (c, v) => setText(row.querySelector(`.c-${c}`), v);
    set('forwarded', fmtBytes(n.forwardedForThem));
    set('receipted-bytes', fmtBytes(n.receiptedBytes));
    set('owed', fmtCoins(n.owedToUs));
    set('receipted', fmtCoins(n.receiptedAmount));
    set('settled', fmtCoins(n.settledToUs));
    set('we-owe', fmtCoins(n.receiptedByUs ?? 0));
    set('settled-by-us', fmtCoins(n.settledByUs ?? 0));
    set('handed', fmtBytes(n.handedToThem));
    set('signed', fmtInt(n.receiptsWeSigned));
    set('allowed', n.allowedBytesPerSecond == null ? 'unlimited' : `${fmtBytes(n.allowedBytesPerSecond)}/s`);
    set('drops', fmtInt(n.creditDrops));
  }, balance ? 'No neighbours with books yet.' : error ? 'No books to show.' : 'Loading…');
}

export default {
  id: 'payments',
  title: 'Payments',
  needs: ['balance'],
  poll: { balance: 3000 },
  mount,
  update,
  unmount() {
    unsubscribe?.();
    unsubscribe = null;
    els = null;
  },
};
