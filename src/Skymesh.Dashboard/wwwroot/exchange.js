// Exchange: the node's own account on an exchange service (node.json's "exchange"), trading as the node's address with
// signed requests — a market's book, the account's trades, balances (and a FROZEN banner while it owes a reversed
// deposit), placing and cancelling orders, deposits with their confirmations and the deposit addresses, withdrawals
// with their states, and for an exchange operator the withdrawals waiting for approval.

import {
  h, api, act, addr, badge, card, fill, fmtDateTime, fmtTime, load, notice, setBadge, setText, shortAddr, state, syncRows,
  table, trackDirty, clean, unavailable,
} from './core.js';

const BOOK_DEPTH = 20;
const BOOK_EVERY_MS = 1000;

/** Every state is a word; its tone gives the colour and the shape. */
const STATE_TONES = {
  credited: 'ok', confirmed: 'ok', broadcast: 'ok', filled: 'ok', open: 'ok', approved: 'ok',
  seen: 'warn', confirming: 'warn', held: 'warn', requested: 'warn',
  reversed: 'bad', dropped: 'bad', failed: 'bad', rejected: 'bad', canceled: 'neutral', expired: 'neutral',
};

let els = null;
let market = '';
let bookTimer = 0;
let bookBusy = false;
/** Deposit addresses shown, by asset (kept while the page is open). */
const addresses = new Map();
/** The idempotency key of the withdrawal being asked for: the same request sent again is the same withdrawal. */
let withdrawalKey = '';

function randomKey(prefix) {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return `${prefix}-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function field(id, label, control, hint) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hint ? h('small', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

function input(id, props) {
  return trackDirty(h('input', { id, name: id, autocomplete: 'off', spellcheck: 'false', ...props }));
}

function stateBadge(text, className = 'state') {
  const word = String(text ?? '—').split(' ')[0];
  return badge(text ?? '—', className, STATE_TONES[word] ?? 'neutral');
}

function setState(el, text) {
  const word = String(text ?? '—').split(' ')[0];
  setBadge(el, text ?? '—', STATE_TONES[word] ?? 'neutral');
}

/** Shows an exchange refusal beside the form that caused it: its message, and its code for people who look it up. */
function showError(el, error) {
  if (!error) {
    el.hidden = true;
    el.removeAttribute('data-code');
    fill(el);
    return;
  }
  el.hidden = false;
  if (error.code) el.dataset.code = error.code;
  else el.removeAttribute('data-code');
  fill(el, h('span', { class: 'error-message' }, error.message || String(error)), error.code ? h('code', { class: 'error-code' }, error.code) : null);
}

/** A time of the exchange's clock (milliseconds since 1970) as a short local time, whole in its tooltip. */
function timeOf(ms) {
  const d = new Date(Number(ms));
  if (ms == null || Number.isNaN(d.getTime())) return '—';
  return h('time', { datetime: d.toISOString(), title: fmtDateTime(d) }, fmtTime(d));
}

function marketInfo(view, symbol) {
  return (view?.markets ?? []).find((m) => m.symbol === symbol) ?? null;
}

function assetInfo(view, code) {
  return (view?.assets ?? []).find((a) => a.code === code) ?? null;
}

// ---------------------------------------------------------------------------------------------------------------------
// Mount

function mount(root) {
  const status = h('div', { class: 'status-line', id: 'exchange-status' });
  const frozen = h('div', { id: 'exchange-frozen', class: 'frozen-banner', role: 'alert', hidden: true });
  const snippet = h('pre', { class: 'snippet' }, h('code', { id: 'exchange-example' }));
  const setup = card('Trade on an exchange', { id: 'exchange-setup' },
    h('p', null, 'This node trades on no exchange. Add an ', h('code', null, 'exchange'), ' section to its node.json and restart it:'),
    snippet,
    h('p', { class: 'muted' }, 'The node then trades as its own address: every request is signed with the node\u2019s key. ',
      h('code', null, 'broker'), ' defaults to the node\u2019s own broker, ', h('code', null, 'brokerName'), ' to its broker name, ',
      h('code', null, 'name'), ' (the exchange\u2019s topic prefix) to "exchange".'));
  setup.hidden = true;

  // Account and market
  const marketSelect = h('select', { id: 'exchange-market', name: 'exchange-market' });
  marketSelect.addEventListener('change', () => {
    market = marketSelect.value;
    clearBook();
    renderForm();
    refreshBook();
  });
  const account = h('dl', { class: 'facts account-facts' },
    h('div', null, h('dt', null, 'Account'), h('dd', { id: 'exchange-account-address' }, '—')),
    h('div', null, h('dt', null, 'Exchange'), h('dd', null, badge('—', 'exchange-state', 'neutral'), ' ', h('code', { id: 'exchange-service', class: 'addr' }))),
    h('div', null, h('dt', null, 'Broker'), h('dd', { id: 'exchange-broker' }, '—')),
    h('div', null, h('dt', null, 'Market'), h('dd', null, marketSelect)));

  // Book
  const book = table('exchange-book', ['Price', 'Quantity', ''], { caption: 'Order book: asks above, bids below' });
  book.table.classList.add('book');
  const asks = book.tbody;
  asks.classList.add('asks');
  const spread = h('tbody', { class: 'spread' }, h('tr', null, h('td', { colspan: '3', class: 'spread-cell' }, '—')));
  const bids = h('tbody', { class: 'bids' });
  book.table.append(spread, bids);
  const bookMeta = h('p', { id: 'exchange-book-meta', class: 'muted small-text' }, '');

  // Order form
  const side = trackDirty(h('select', { id: 'order-side', name: 'side' }, h('option', { value: 'buy' }, 'Buy'), h('option', { value: 'sell' }, 'Sell')));
  const type = trackDirty(h('select', { id: 'order-type', name: 'type' }, h('option', { value: 'limit' }, 'Limit'), h('option', { value: 'market' }, 'Market')));
  const price = input('order-price', { inputmode: 'decimal', placeholder: '0.00012' });
  const quantity = input('order-quantity', { inputmode: 'decimal', placeholder: '1.5', required: true });
  const tif = trackDirty(h('select', { id: 'order-tif', name: 'timeInForce' },
    h('option', { value: 'gtc' }, 'Good till cancelled (GTC)'), h('option', { value: 'ioc' }, 'Immediate or cancel (IOC)'), h('option', { value: 'fok' }, 'Fill or kill (FOK)')));
  const postOnly = h('input', { type: 'checkbox', id: 'order-post-only', name: 'postOnly' });
  const place = h('button', { type: 'submit', id: 'order-submit' }, 'Place order');
  const orderError = h('p', { id: 'order-error', class: 'form-error', role: 'alert', hidden: true });
  const rules = h('small', { class: 'hint', id: 'order-rules' }, '');
  const orderForm = h('form', { id: 'order-form', class: 'form-stack', novalidate: true },
    h('div', { class: 'field-row' }, field('order-side', 'Side', side), field('order-type', 'Type', type)),
    field('order-price', 'Price', price),
    field('order-quantity', 'Quantity', quantity),
    field('order-tif', 'Time in force', tif),
    h('label', { class: 'check', for: 'order-post-only' }, postOnly, 'Post only (never takes liquidity)'),
    rules,
    orderError,
    h('div', { class: 'form-actions' }, place));
  type.addEventListener('change', renderForm);
  side.addEventListener('change', renderForm);
  orderForm.addEventListener('submit', (e) => {
    e.preventDefault();
    placeOrder();
  });

  // Tables
  const balances = table('exchange-balances', ['Asset', 'Available', 'Held', 'Owed'], { caption: 'Balances' });
  const orders = table('exchange-orders', ['Order', 'Market', 'Side', 'Type', 'Price', 'Quantity', 'Filled', 'Remaining', 'Status', 'Placed', ''], { caption: 'Open orders' });
  const fills = table('exchange-fills', ['Time', 'Market', 'Side', 'Price', 'Quantity', 'Fee', 'Liquidity', 'Order'], { caption: 'Recent trades of this account' });
  const depositAddresses = h('ul', { id: 'exchange-deposit-addresses', class: 'plain-list deposit-addresses' });
  const deposits = table('exchange-deposits', ['Asset', 'Amount', 'State', 'Confirmations', 'Transaction', 'Seen'], { caption: 'Deposits' });
  const withdrawals = table('exchange-withdrawals', ['Withdrawal', 'Asset', 'Amount', 'To', 'State', 'Transaction', 'Reason', 'Asked'], { caption: 'Withdrawals' });
  const approvals = table('exchange-approvals-table', ['Withdrawal', 'Account', 'Asset', 'Amount', 'To', 'Asked', 'Reason to reject', ''], { caption: 'Withdrawals waiting for an operator' });

  // Withdrawal form
  const withdrawAsset = trackDirty(h('select', { id: 'withdraw-asset', name: 'asset' }));
  const withdrawAddress = input('withdraw-address', { placeholder: 'an address on the coin\u2019s chain', required: true });
  const withdrawAmount = input('withdraw-amount', { inputmode: 'decimal', placeholder: '0.5', required: true });
  const withdrawButton = h('button', { type: 'submit', id: 'withdraw-submit' }, 'Request withdrawal');
  const withdrawError = h('p', { id: 'withdraw-error', class: 'form-error', role: 'alert', hidden: true });
  const withdrawRules = h('small', { class: 'hint', id: 'withdraw-rules' }, '');
  const withdrawForm = h('form', { id: 'withdraw-form', class: 'form-stack', novalidate: true },
    field('withdraw-asset', 'Coin', withdrawAsset),
    field('withdraw-address', 'To address', withdrawAddress),
    field('withdraw-amount', 'Amount', withdrawAmount),
    withdrawRules,
    withdrawError,
    h('div', { class: 'form-actions' }, withdrawButton));
  for (const control of [withdrawAsset, withdrawAddress, withdrawAmount]) {
    // A changed request is a new withdrawal; the same one sent again keeps its key.
    control.addEventListener('input', () => {
      withdrawalKey = '';
    });
  }
  withdrawAsset.addEventListener('change', () => {
    withdrawalKey = '';
    renderWithdrawRules();
  });
  withdrawForm.addEventListener('submit', (e) => {
    e.preventDefault();
    requestWithdrawal();
  });

  const approvalsCard = card('Withdrawals waiting for you (operator)', { id: 'exchange-approvals', class: 'wide' },
    h('p', { class: 'muted' }, 'Withdrawals of any account above the coin\u2019s approval threshold wait here. Approving sends them on at once; rejecting refunds the account.'),
    approvals.wrap);
  approvalsCard.hidden = true;

  const main = h('div', { id: 'exchange-main', hidden: true },
    frozen,
    h('div', { class: 'grid exchange-grid' },
      card('Account', { id: 'exchange-account', class: 'wide' }, account),
      card('Book', { id: 'exchange-book-card' }, book.wrap, bookMeta),
      card('Place an order', { id: 'exchange-order-card' }, orderForm),
      card('Balances', { id: 'exchange-balances-card' }, balances.wrap),
      card('Open orders', { id: 'exchange-orders-card', class: 'wide' }, orders.wrap),
      card('Recent trades', { id: 'exchange-fills-card', class: 'wide' },
        h('p', { class: 'muted' }, 'This account\u2019s own trades, newest first (the exchange keeps no history of other trades).'), fills.wrap),
      card('Deposits', { id: 'exchange-deposits-card', class: 'wide' },
        h('p', { class: 'muted' }, 'Coins paid to the account\u2019s deposit address are credited once they have enough confirmations.'),
        depositAddresses, deposits.wrap),
      card('Withdrawals', { id: 'exchange-withdrawals-card', class: 'wide' },
        h('div', { class: 'split' }, h('div', { class: 'split-main' }, withdrawals.wrap), h('div', { class: 'split-side' }, withdrawForm))),
      approvalsCard));

  root.append(h('h1', { tabindex: '-1' }, 'Exchange'), status, setup, main);
  els = {
    status, setup, main, frozen, account, marketSelect, asks, bids, spread, bookMeta, side, type, price, quantity, tif, postOnly, place,
    orderError, rules, balances: balances.tbody, orders: orders.tbody, fills: fills.tbody, depositAddresses, deposits: deposits.tbody,
    withdrawals: withdrawals.tbody, approvals: approvals.tbody, approvalsCard, withdrawAsset, withdrawAddress, withdrawAmount,
    withdrawButton, withdrawError, withdrawRules, exchangeState: account.querySelector('.exchange-state'),
  };
  update(new Set(['exchange']));
  bookTimer = setInterval(() => {
    if (!document.hidden) refreshBook();
  }, BOOK_EVERY_MS);
}

// ---------------------------------------------------------------------------------------------------------------------
// Actions

async function placeOrder() {
  const body = {
    market,
    side: els.side.value,
    type: els.type.value,
    quantity: els.quantity.value.trim(),
    timeInForce: els.tif.value,
  };
  if (body.type === 'limit') body.price = els.price.value.trim();
  if (els.postOnly.checked && body.type === 'limit') body.postOnly = true;
  const result = await act(els.place, async () => {
    if (!market) throw new Error('Choose a market first');
    if (!body.quantity) throw new Error('Give the quantity');
    if (body.type === 'limit' && !body.price) throw new Error('Give the price (or choose a market order)');
    return api('/api/exchange/orders', { method: 'POST', body });
  }, { busy: 'Placing', quiet: true });
  if (!els) return;
  if (!result.ok) {
    showError(els.orderError, result.error);
    return;
  }
  showError(els.orderError, null);
  const order = result.value;
  notice(`Order ${order?.id}: ${order?.side} ${order?.quantity} ${order?.market}${order?.price ? ` at ${order.price}` : ''} — ${order?.status}`);
  els.quantity.value = '';
  clean(els.quantity, els.price);
  load(['exchange']);
  refreshBook();
}

async function cancelOrder(row, button) {
  const id = row.dataset.orderId;
  const result = await act(button, () => api(`/api/exchange/orders/${encodeURIComponent(id)}`, { method: 'DELETE' }), {
    busy: 'Cancelling', done: `Order ${id} cancelled`,
  });
  if (result.ok) {
    row.remove();
    load(['exchange']);
    refreshBook();
  }
}

async function showAddress(asset, button) {
  const result = await act(button, () => api('/api/exchange/deposit-address', { method: 'POST', body: { asset } }), { busy: 'Asking' });
  if (result.ok && result.value?.address) {
    addresses.set(asset, result.value);
    renderDepositAddresses();
  }
}

async function requestWithdrawal() {
  if (!withdrawalKey) withdrawalKey = randomKey('dash');
  const body = {
    asset: els.withdrawAsset.value,
    address: els.withdrawAddress.value.trim(),
    amount: els.withdrawAmount.value.trim(),
    key: withdrawalKey,
  };
  const result = await act(els.withdrawButton, async () => {
    if (!body.asset) throw new Error('Choose the coin');
    if (!body.address) throw new Error('Give the address to pay');
    if (!body.amount) throw new Error('Give the amount');
    return api('/api/exchange/withdrawals', { method: 'POST', body });
  }, { busy: 'Requesting', quiet: true });
  if (!els) return;
  if (!result.ok) {
    showError(els.withdrawError, result.error);
    return;
  }
  showError(els.withdrawError, null);
  const w = result.value;
  notice(`Withdrawal ${w?.id}: ${w?.amount} ${w?.asset} — ${w?.state}${w?.state === 'held' ? ' (waits for an operator)' : ''}`);
  withdrawalKey = '';
  els.withdrawAmount.value = '';
  els.withdrawAddress.value = '';
  clean(els.withdrawAmount, els.withdrawAddress);
  load(['exchange']);
}

async function decide(row, button) {
  const id = row.dataset.withdrawalId;
  const choice = button.dataset.choice;
  const reason = row.querySelector('input[name="reason"]')?.value.trim();
  const body = choice === 'reject' && reason ? { reason } : {};
  const result = await act(button, () => api(`/api/exchange/withdrawals/${encodeURIComponent(id)}/${choice}`, { method: 'POST', body }), {
    busy: choice === 'approve' ? 'Approving' : 'Rejecting',
    done: (w) => `Withdrawal ${id} ${choice === 'approve' ? 'approved' : 'rejected'}: ${w?.state ?? ''}`,
  });
  if (result.ok) {
    row.remove();
    load(['exchange']);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The book (asked about once a second while the page is open)

function clearBook() {
  if (!els) return;
  fill(els.asks);
  fill(els.bids);
  setText(els.spread.querySelector('.spread-cell'), '—');
  setText(els.bookMeta, '');
}

async function refreshBook() {
  const view = state.data.exchange;
  if (!els || bookBusy || !market || !view?.configured || !view.connected) return;
  bookBusy = true;
  const gen = state.gen;
  const asked = market;
  try {
    const book = await api(`/api/exchange/book?market=${encodeURIComponent(asked)}&depth=${BOOK_DEPTH}`);
    if (els && gen === state.gen && asked === market) renderBook(book);
  } catch (error) {
    if (els && gen === state.gen && asked === market) setText(els.bookMeta, `The book is not available: ${error.message}`);
  } finally {
    bookBusy = false;
  }
}

function levelRow(kind) {
  return (level) => {
    const row = h('tr', { class: kind, 'data-price': level.price, tabindex: '0', title: 'Take this price into the order form' },
      h('td', { class: 'num price' }, level.price), h('td', { class: 'num quantity' }), h('td', { class: 'best-tag' }));
    const take = () => {
      if (!els) return;
      els.type.value = 'limit';
      els.price.value = level.price;
      els.price.dataset.dirty = '1';
      els.side.value = kind === 'ask' ? 'buy' : 'sell';
      renderForm();
    };
    row.addEventListener('click', take);
    row.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') take();
    });
    return row;
  };
}

function renderBook(book) {
  const asks = (book?.asks ?? []).slice().reverse();
  const bids = book?.bids ?? [];
  const refresh = (kind, bestPrice) => (row, level) => {
    setText(row.querySelector('.quantity'), level.quantity);
    const best = level.price === bestPrice;
    row.classList.toggle('best', best);
    setText(row.querySelector('.best-tag'), best ? `best ${kind}` : '');
  };
  const bestAsk = book?.asks?.[0]?.price;
  const bestBid = book?.bids?.[0]?.price;
  syncRows(els.asks, asks, (l) => l.price, levelRow('ask'), refresh('ask', bestAsk), 'No asks.');
  syncRows(els.bids, bids, (l) => l.price, levelRow('bid'), refresh('bid', bestBid), 'No bids.');
  const info = marketInfo(state.data.exchange, book?.market);
  const quoteScale = assetInfo(state.data.exchange, info?.quote)?.scale ?? 8;
  const cell = els.spread.querySelector('.spread-cell');
  if (bestAsk && bestBid) setText(cell, `spread ${(Number(bestAsk) - Number(bestBid)).toFixed(quoteScale)} ${info?.quote ?? ''}`.trim());
  else setText(cell, bestAsk || bestBid ? 'one side empty' : 'the book is empty');
  setText(els.bookMeta, `${book?.market ?? market} at market-data sequence ${book?.sequence ?? '—'}; prices in ${info?.quote ?? 'quote'} per ${info?.base ?? 'base'} coin. Click a level to take its price.`);
}

// ---------------------------------------------------------------------------------------------------------------------
// Rendering

function update(names = new Set()) {
  if (!els || !names.has('exchange')) return;
  const view = state.data.exchange;
  const error = state.errors.exchange;
  if (!view) {
    fill(els.status, error ? unavailable(error, 'The exchange') : h('p', { class: 'muted' }, 'Loading…'));
    return;
  }
  if (!view.configured) {
    fill(els.status);
    els.setup.hidden = false;
    els.main.hidden = true;
    setText(document.getElementById('exchange-example'), view.example ?? '"exchange": { "service": "<the exchange\'s id>" }');
    return;
  }
  els.setup.hidden = true;
  els.main.hidden = false;
  if (!view.connected) {
    fill(els.status, h('p', { class: 'unavailable', role: 'note', id: 'exchange-unreachable', 'data-state': 'unreachable' },
      h('strong', null, 'exchange unreachable'), ` — ${String(view.error ?? '').replace(/^exchange unreachable: /, '')} The page keeps trying.`));
  } else if (view.error) {
    fill(els.status, h('p', { class: 'unavailable', role: 'note' }, `Part of the account could not be shown: ${view.error}`));
  } else {
    fill(els.status);
  }
  const accountCell = document.getElementById('exchange-account-address');
  if (accountCell.dataset.account !== view.account) {
    accountCell.dataset.account = view.account ?? '';
    fill(accountCell, h('code', { class: 'addr-full' }, view.account ?? '—'), h('small', { class: 'muted block' }, 'this node\u2019s address: every request is signed with its key'));
  }
  setBadge(els.exchangeState, view.connected ? 'connected' : 'unreachable', view.connected ? 'ok' : 'bad');
  setText(document.getElementById('exchange-service'), view.service ?? '');
  document.getElementById('exchange-service').title = view.service ?? '';
  setText(document.getElementById('exchange-broker'), `${view.broker ?? '—'} (as ${view.login ?? '—'}; topics ${view.name ?? 'exchange'}.*)`);

  renderMarkets(view);
  renderFrozen(view);
  renderForm();
  renderBalances(view);
  renderOrders(view);
  renderFills(view);
  renderDepositAddresses();
  renderDeposits(view);
  renderWithdrawals(view);
  renderWithdrawAssets(view);
  renderApprovals(view);
  if (view.connected && market && !els.asks.rows.length && !els.bids.rows.length) refreshBook();
}

function renderMarkets(view) {
  const symbols = (view.markets ?? []).map((m) => m.symbol);
  const select = els.marketSelect;
  if (select.options.length !== symbols.length || symbols.some((s, i) => select.options[i].value !== s)) {
    fill(select, symbols.map((s) => h('option', { value: s }, s)));
  }
  if (!symbols.includes(market)) {
    market = symbols[0] ?? '';
    clearBook();
  }
  select.value = market;
  select.disabled = symbols.length === 0;
}

function renderFrozen(view) {
  const owed = (view.balances ?? []).filter((b) => Number(b.owed) > 0);
  els.frozen.hidden = !view.frozen;
  if (view.frozen) {
    fill(els.frozen, h('strong', null, 'FROZEN'),
      ` — this account owes ${owed.map((b) => `${b.owed} ${b.asset}`).join(' and ') || 'a reversed deposit'} from a deposit the chain took back. `
      + 'It may only cancel orders: placing orders and withdrawing are refused until a new deposit of that coin repays the debt.');
  }
}

function renderForm() {
  if (!els) return;
  const view = state.data.exchange;
  const info = marketInfo(view, market);
  const isMarket = els.type.value === 'market';
  els.price.disabled = isMarket;
  els.postOnly.disabled = isMarket;
  for (const option of els.tif.options) option.disabled = isMarket && option.value === 'gtc';
  if (isMarket && els.tif.value === 'gtc') els.tif.value = 'ioc';
  const priceLabel = document.querySelector('label[for="order-price"]');
  const quantityLabel = document.querySelector('label[for="order-quantity"]');
  setText(priceLabel, info ? `Price (${info.quote} per ${info.base})` : 'Price');
  setText(quantityLabel, info ? `Quantity (${info.base})` : 'Quantity');
  setText(els.place, `${els.side.value === 'sell' ? 'Sell' : 'Buy'} ${info?.base ?? ''}`.trim());
  setText(els.rules, info
    ? `Lot ${info.lotSize} ${info.base}; tick ${info.tickSize} ${info.quote}; least order value ${info.minNotional} ${info.quote}; fees: maker ${pct(info.makerFee)}, taker ${pct(info.takerFee)}.`
    : '');
  if (!els.place.hasAttribute('aria-busy')) els.place.disabled = !view?.connected || !market;
}

function pct(fraction) {
  const n = Number(fraction) * 100;
  return Number.isFinite(n) ? `${Number(n.toFixed(4))} %` : '—';
}

function renderBalances(view) {
  const balances = new Map((view.balances ?? []).map((b) => [b.asset, b]));
  const assets = (view.assets ?? []).map((a) => a.code);
  for (const code of balances.keys()) if (!assets.includes(code)) assets.push(code);
  syncRows(els.balances, assets.map((code) => ({ asset: code, ...(balances.get(code) ?? {}) })), (b) => b.asset,
    (b) => h('tr', { 'data-asset': b.asset },
      h('th', { scope: 'row' }, b.asset), h('td', { class: 'num available' }), h('td', { class: 'num held' }), h('td', { class: 'num owed' })),
    (row, b) => {
      setText(row.querySelector('.available'), b.available ?? '—');
      setText(row.querySelector('.held'), b.held ?? '—');
      const owed = row.querySelector('.owed');
      setText(owed, b.owed ?? '—');
      owed.classList.toggle('error-text', Number(b.owed) > 0);
    }, view.connected ? 'No assets.' : 'Not known while the exchange is unreachable.');
}

function renderOrders(view) {
  syncRows(els.orders, view.openOrders ?? [], (o) => o.id, (o) => {
    const cancel = h('button', { type: 'button', class: 'small danger cancel', 'aria-label': `Cancel order ${o.id}` }, 'Cancel');
    const row = h('tr', { 'data-order-id': o.id, 'data-side': o.side },
      h('th', { scope: 'row' }, String(o.id)), h('td', null, o.market), h('td', { class: `side side-${o.side}` }, o.side),
      h('td', { class: 'type' }), h('td', { class: 'num price' }), h('td', { class: 'num quantity' }), h('td', { class: 'num filled' }),
      h('td', { class: 'num remaining' }), h('td', null, stateBadge(o.status, 'status')),
      h('td', null, timeOf(o.created)),
      h('td', { class: 'actions' }, cancel));
    cancel.addEventListener('click', () => cancelOrder(row, cancel));
    return row;
  }, (row, o) => {
    setText(row.querySelector('.type'), `${o.type} ${o.timeInForce}${o.postOnly ? ' post-only' : ''}`);
    setText(row.querySelector('.price'), o.price ?? 'market');
    setText(row.querySelector('.quantity'), o.quantity);
    setText(row.querySelector('.filled'), o.filled);
    setText(row.querySelector('.remaining'), o.remaining);
    setState(row.querySelector('.status'), o.status);
  }, 'No open orders.');
}

function renderFills(view) {
  syncRows(els.fills, view.recentFills ?? [], (f) => f.tradeId, (f) => h('tr', { 'data-trade-id': f.tradeId },
    h('td', null, timeOf(f.time)),
    h('td', null, f.market), h('td', { class: `side side-${f.side}` }, f.side), h('td', { class: 'num' }, f.price),
    h('td', { class: 'num' }, f.quantity), h('td', { class: 'num' }, f.fee), h('td', null, f.liquidity), h('td', null, String(f.orderId))),
  () => {}, 'No trades yet.');
}

function renderDepositAddresses() {
  const view = state.data.exchange;
  const coins = (view?.assets ?? []).filter((a) => a.chain);
  const list = els.depositAddresses;
  const existing = new Map([...list.children].map((li) => [li.dataset.asset, li]));
  for (const coin of coins) {
    let li = existing.get(coin.code);
    existing.delete(coin.code);
    if (!li) {
      const button = h('button', { type: 'button', class: 'small show-address', 'data-asset': coin.code }, `Show my ${coin.code} deposit address`);
      button.addEventListener('click', () => showAddress(coin.code, button));
      li = h('li', { 'data-asset': coin.code }, h('strong', { class: 'coin' }, coin.code), button,
        h('code', { class: 'deposit-address addr-full' }), h('small', { class: 'muted deposit-note' }));
      list.append(li);
    }
    const shown = addresses.get(coin.code);
    const button = li.querySelector('.show-address');
    button.hidden = Boolean(shown);
    setText(li.querySelector('.deposit-address'), shown?.address ?? '');
    setText(li.querySelector('.deposit-note'), shown
      ? `${coin.code} on the ${shown.network} chain, credited after ${shown.confirmations} confirmation${shown.confirmations === 1 ? '' : 's'}`
      : `credited after ${coin.confirmations} confirmation${coin.confirmations === 1 ? '' : 's'}`);
  }
  for (const li of existing.values()) li.remove();
}

function depositState(d) {
  if (d.state === 'credited' || d.confirmations == null) return d.state;
  return `${d.state} ${Math.min(d.confirmations, d.required)}/${d.required}`;
}

function renderDeposits(view) {
  syncRows(els.deposits, view.deposits ?? [], (d) => `${d.asset}:${d.txId}:${d.index}`, (d) => h('tr', { 'data-tx': d.txId, 'data-index': d.index, 'data-asset': d.asset },
    h('th', { scope: 'row' }, d.asset), h('td', { class: 'num amount' }), h('td', null, stateBadge('', 'state')), h('td', { class: 'num confirmations' }),
    h('td', null, h('code', { class: 'addr', title: `${d.txId}:${d.index}` }, `${shortAddr(d.txId)}:${d.index}`)),
    h('td', null, timeOf(d.seen))),
  (row, d) => {
    setText(row.querySelector('.amount'), d.amount);
    setState(row.querySelector('.state'), depositState(d));
    row.dataset.state = d.state;
    setText(row.querySelector('.confirmations'), d.confirmations == null ? `— of ${d.required}` : `${d.confirmations} of ${d.required}`);
  }, 'No deposits yet. Show a deposit address above and pay to it.');
}

function renderWithdrawals(view) {
  syncRows(els.withdrawals, view.withdrawals ?? [], (w) => w.id, (w) => h('tr', { 'data-withdrawal-id': w.id, 'data-asset': w.asset },
    h('th', { scope: 'row' }, String(w.id)), h('td', null, w.asset), h('td', { class: 'num amount' }, w.amount),
    h('td', null, h('code', { class: 'addr', title: w.address }, shortAddr(w.address))),
    h('td', null, stateBadge('', 'state')), h('td', { class: 'tx' }), h('td', { class: 'reason' }),
    h('td', null, timeOf(w.created))),
  (row, w) => {
    const text = w.state === 'broadcast' ? `broadcast ${w.confirmations ?? 0} conf.` : w.state === 'held' ? 'held (waits for an operator)' : w.state;
    setState(row.querySelector('.state'), text);
    row.dataset.state = w.state;
    const tx = row.querySelector('.tx');
    if (tx.dataset.tx !== (w.txId ?? '')) {
      tx.dataset.tx = w.txId ?? '';
      fill(tx, w.txId ? h('code', { class: 'addr', title: w.txId }, shortAddr(w.txId)) : '—');
    }
    setText(row.querySelector('.reason'), w.reason ?? (w.approvedBy && w.approvedBy !== 'auto' ? `approved by ${shortAddr(w.approvedBy)}` : ''));
  }, 'No withdrawals yet.');
}

function renderWithdrawAssets(view) {
  const coins = (view.assets ?? []).filter((a) => a.chain).map((a) => a.code);
  const select = els.withdrawAsset;
  if (select.options.length !== coins.length || coins.some((c, i) => select.options[i].value !== c)) {
    const value = select.value;
    fill(select, coins.map((c) => h('option', { value: c }, c)));
    if (coins.includes(value)) select.value = value;
  }
  renderWithdrawRules();
  if (!els.withdrawButton.hasAttribute('aria-busy')) els.withdrawButton.disabled = !view.connected || coins.length === 0;
}

function renderWithdrawRules() {
  const coin = assetInfo(state.data.exchange, els.withdrawAsset.value);
  if (!coin) {
    setText(els.withdrawRules, '');
    return;
  }
  const parts = [`Least ${coin.withdrawalMinimum} ${coin.code}`];
  parts.push(coin.withdrawalApprovalAbove ? `above ${coin.withdrawalApprovalAbove} ${coin.code} an operator approves it first` : 'none waits for an operator');
  parts.push(coin.withdrawalDailyLimit ? `at most ${coin.withdrawalDailyLimit} ${coin.code} in 24 hours` : 'no daily limit');
  setText(els.withdrawRules, `${parts.join('; ')}.`);
}

function renderApprovals(view) {
  els.approvalsCard.hidden = !view.operator;
  if (!view.operator) return;
  syncRows(els.approvals, view.pendingApprovals ?? [], (w) => w.id, (w) => {
    const reasonId = `reject-reason-${w.id}`;
    const approve = h('button', { type: 'button', class: 'small choice choice-accept', 'data-choice': 'approve', 'aria-label': `Approve withdrawal ${w.id}` }, 'Approve');
    const reject = h('button', { type: 'button', class: 'small danger', 'data-choice': 'reject', 'aria-label': `Reject withdrawal ${w.id}` }, 'Reject');
    const row = h('tr', { 'data-withdrawal-id': w.id, 'data-asset': w.asset },
      h('th', { scope: 'row' }, String(w.id)), h('td', null, addr(w.account)), h('td', null, w.asset), h('td', { class: 'num' }, w.amount),
      h('td', null, h('code', { class: 'addr', title: w.address }, shortAddr(w.address))),
      h('td', null, timeOf(w.created)),
      h('td', null, h('label', { class: 'visually-hidden', for: reasonId }, `Why withdrawal ${w.id} is rejected`),
        h('input', { id: reasonId, name: 'reason', placeholder: 'no reason given', autocomplete: 'off' })),
      h('td', { class: 'actions' }, approve, reject));
    approve.addEventListener('click', () => decide(row, approve));
    reject.addEventListener('click', () => decide(row, reject));
    return row;
  }, () => {}, 'No withdrawal waits for approval.');
}

export default {
  id: 'exchange',
  title: 'Exchange',
  needs: ['exchange'],
  poll: { exchange: 2000 },
  mount,
  update,
  reset() {
    market = '';
    addresses.clear();
    withdrawalKey = '';
  },
  unmount() {
    clearInterval(bookTimer);
    bookTimer = 0;
    els = null;
  },
};
