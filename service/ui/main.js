// @ts-check
/**
 * The page: signs in and out, reads the filters from the URL and the form, loads a view (the
 * histogram and the first page of results), pages on scroll, and wires the drawer, the export,
 * live tail and the keyboard together. Each module does one job; this one holds the view.
 */
import { ApiError, clearKey, find, getKey, histogram, pageTier, setKey } from './api.js';
import { Drawer } from './drawer.js';
import { exportView } from './export.js';
import { HistogramView } from './histogram.js';
import { Live } from './live.js';
import { DEFAULTS, fromQuery, recent, remember, same, toQuery, windowOf } from './state.js';
import { Table } from './table.js';
import { el, fmtCount, fromInput, localZone, toInput } from './util.js';

/** @typedef {import('./state.js').Filters} Filters */

const PAGE = 100;

/** @param {string} id */
const $ = (id) => /** @type {any} */ (document.getElementById(id));

const ui = {
  signinView: /** @type {HTMLElement} */ ($('signin-view')),
  signin: /** @type {HTMLFormElement} */ ($('signin')),
  apiKey: /** @type {HTMLInputElement} */ ($('api-key')),
  signinSubmit: /** @type {HTMLButtonElement} */ ($('signin-submit')),
  signinError: /** @type {HTMLElement} */ ($('signin-error')),
  app: /** @type {HTMLElement} */ ($('app')),
  form: /** @type {HTMLFormElement} */ ($('filters')),
  type: /** @type {HTMLInputElement} */ ($('f-type')),
  consumer: /** @type {HTMLInputElement} */ ($('f-consumer')),
  range: /** @type {HTMLSelectElement} */ ($('f-range')),
  from: /** @type {HTMLInputElement} */ ($('f-from')),
  to: /** @type {HTMLInputElement} */ ($('f-to')),
  tz: /** @type {HTMLSelectElement} */ ($('f-tz')),
  formError: /** @type {HTMLElement} */ ($('f-error')),
  error: /** @type {HTMLElement} */ ($('error')),
  errorText: /** @type {HTMLElement} */ ($('error-text')),
  errorRetry: /** @type {HTMLButtonElement} */ ($('error-retry')),
  errorSignin: /** @type {HTMLButtonElement} */ ($('error-signin')),
  by: /** @type {HTMLSelectElement} */ ($('h-by')),
  results: /** @type {HTMLTableElement} */ ($('results')),
  status: /** @type {HTMLElement} */ ($('results-status')),
  sentinel: /** @type {HTMLElement} */ ($('sentinel')),
  thTime: /** @type {HTMLElement} */ ($('th-time')),
  exportStatus: /** @type {HTMLElement} */ ($('export-status')),
  exportButtons: /** @type {HTMLButtonElement[]} */ ([$('export-ndjson'), $('export-csv')]),
  live: /** @type {HTMLInputElement} */ ($('live')),
  liveStatus: /** @type {HTMLElement} */ ($('live-status')),
  liveBanner: /** @type {HTMLElement} */ ($('live-banner')),
  liveBannerText: /** @type {HTMLElement} */ ($('live-banner-text')),
  help: /** @type {HTMLDialogElement} */ ($('help')),
};

/**
 * The view being shown: its filters resolved to a window at load time, and its paging.
 * @typedef {{from: string, to: string, cursor?: string, end: boolean, loading: boolean,
 *   failed: boolean, marked: boolean, ctrl: AbortController}} View
 */

let filters = fromQuery(location.search);
/** @type {View|null} */
let view = null;
/** The time zone the from/to inputs are written in, and what fillForm wrote in them. */
let formTz = filters.tz;
let written = { from: '', to: '' };
/** @type {ReturnType<typeof setInterval>|undefined} */
let histTimer;

const drawer = new Drawer($('drawer'));
const table = new Table(ui.results, (ev, tier, row) => drawer.open(ev, tier, filters.tz, row));
const hist = new HistogramView($('histogram'), $('h-legend'), $('h-total'), (from, to) => {
  // Narrowing never widens: the edge buckets are cut to the view's window.
  if (view && Date.parse(from) < Date.parse(view.from)) from = view.from;
  if (view && Date.parse(to) > Date.parse(view.to)) to = view.to;
  setLive(false);
  navigate({ ...filters, range: 'custom', from, to });
});

// ---- suggestions ----------------------------------------------------------------------------

/** @type {{type: Set<string>, consumer: Set<string>}} */
const seen = { type: new Set(), consumer: new Set() };
let suggestPending = false;

/**
 * Values for the datalists: recently searched first, then those seen in events and series.
 * @param {{type?: string[], consumer?: string[]}} values
 */
function suggest(values) {
  for (const f of /** @type {const} */ (['type', 'consumer'])) {
    for (const v of values[f] ?? []) if (seen[f].size < 500) seen[f].add(v);
  }
  if (suggestPending) return;
  suggestPending = true;
  requestAnimationFrame(() => {
    suggestPending = false;
    for (const f of /** @type {const} */ (['type', 'consumer'])) {
      const list = $(f === 'type' ? 'types-list' : 'consumers-list');
      const values = [...new Set([...recent(f), ...[...seen[f]].sort()])].slice(0, 200);
      list.replaceChildren(...values.map((v) => el('option', { value: v })));
    }
  });
}

// ---- errors ---------------------------------------------------------------------------------

/** @param {unknown} e */
function showError(e) {
  const err = e instanceof ApiError ? e : new ApiError('network', 'error', String(e), null);
  ui.error.dataset.status = String(err.status);
  ui.errorText.textContent = err.describe();
  ui.errorSignin.hidden = err.status !== 401;
  ui.errorRetry.hidden = err.status === 401 || err.status === 403 || err.status === 400;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.dataset.status = '';
  ui.errorText.textContent = '';
}

// ---- the form and the URL -------------------------------------------------------------------

/** Writes `filters` (and the view's window) into the form. */
function fillForm() {
  ui.type.value = filters.type;
  ui.consumer.value = filters.consumer;
  ui.range.value = filters.range;
  ui.tz.value = filters.tz;
  ui.by.value = filters.by;
  formTz = filters.tz;
  ui.from.value = toInput(view?.from ?? filters.from, filters.tz);
  ui.to.value = toInput(view?.to ?? filters.to, filters.tz);
  written = { from: ui.from.value, to: ui.to.value };
  ui.formError.textContent = '';
  ui.thTime.textContent = `Time (${filters.tz === 'utc' ? 'UTC' : localZone()})`;
}

/** The filters the form says, or null (and a message) when they make no sense. */
function readForm() {
  const tz = ui.tz.value === 'utc' ? 'utc' : 'local';
  /** @type {Filters} */
  const f = {
    ...DEFAULTS,
    type: ui.type.value.trim(),
    consumer: ui.consumer.value.trim(),
    range: /** @type {import('./state.js').Range} */ (ui.range.value),
    tz,
    by: filters.by,
  };
  if (f.range === 'custom') {
    // An input left as the view wrote it keeps the view's exact time (inputs show seconds).
    const keep = filters.range === 'custom' && formTz === filters.tz;
    f.from = keep && ui.from.value === written.from ? filters.from : fromInput(ui.from.value, formTz);
    f.to = keep && ui.to.value === written.to ? filters.to : fromInput(ui.to.value, formTz);
    if (!f.from) {
      ui.formError.textContent = 'Enter the start of the time range ("From").';
      return null;
    }
    if (f.to && Date.parse(f.to) <= Date.parse(f.from)) {
      ui.formError.textContent = '"To" must be after "From".';
      return null;
    }
  }
  ui.formError.textContent = '';
  return f;
}

/**
 * Shows `f`: a new history entry when it differs from the current view.
 * @param {Filters} f
 */
function navigate(f) {
  if (!same(f, filters)) history.pushState(null, '', toQuery(f));
  filters = f;
  loadView();
}

function apply() {
  const f = readForm();
  if (!f) return;
  remember('type', f.type);
  remember('consumer', f.consumer);
  navigate(f);
}

// ---- the view -------------------------------------------------------------------------------

function loadView() {
  view?.ctrl.abort();
  const now = Date.now();
  const w = windowOf(filters, now);
  view = {
    from: w.from, to: w.to ?? new Date(now).toISOString(), end: false, loading: false,
    failed: false, marked: false, ctrl: new AbortController(),
  };
  hideError();
  drawer.close();
  fillForm();
  table.tz = filters.tz;
  table.clear(8);
  live.restart();
  loadPage();
  updateStatus();
  loadHistogram();
}

/** The filters of the API calls of the view. */
function query() {
  return { type: filters.type, consumer: filters.consumer, created_from: view?.from ?? '', created_to: view?.to ?? '' };
}

async function loadPage() {
  const v = view;
  if (!v || v.loading || v.end || v.failed) return;
  v.loading = true;
  ui.status.dataset.loading = 'true';
  ui.sentinel.classList.add('loading');
  try {
    const page = await find({ ...query(), order: 'desc', limit: PAGE, cursor: v.cursor }, { signal: v.ctrl.signal });
    if (v !== view) return;
    if (!v.marked) performance.mark('auditlog:first-answer');
    table.add(page.events, pageTier(page.tiers));
    v.cursor = page.next_cursor;
    v.end = !page.next_cursor || page.events.length === 0;
    suggest({ type: page.events.map((e) => e.type), consumer: page.events.map((e) => e.consumer) });
    if (!v.marked) {
      v.marked = true;
      requestAnimationFrame(() => performance.mark('auditlog:first-table'));
    }
  } catch (e) {
    if (v !== view || (e instanceof DOMException && e.name === 'AbortError')) return;
    v.failed = true;
    if (!table.count) table.clear();
    showError(e);
  } finally {
    if (v === view) {
      v.loading = false;
      ui.sentinel.classList.remove('loading');
      updateStatus();
      // Still in sight (a short page, a tall screen): observing again reports it at once.
      if (!v.end && !v.failed) {
        observer.unobserve(ui.sentinel);
        observer.observe(ui.sentinel);
      }
    }
  }
}

const observer = new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting)) loadPage();
}, { rootMargin: '400px 0px' });
observer.observe(ui.sentinel);

function updateStatus() {
  const v = view;
  const n = table.count;
  ui.status.dataset.count = String(n);
  ui.status.dataset.end = String(Boolean(v?.end));
  ui.status.dataset.loading = String(Boolean(v?.loading));
  let text;
  if (!v || (v.loading && n === 0)) text = 'Loading events…';
  else if (v.failed && n === 0) text = 'No events shown: see the error above.';
  else if (v.end && n === 0) text = 'No events match these filters in this time range.';
  else if (v.end) text = `${fmtCount(n)} event${n === 1 ? '' : 's'}, newest first — all of this time range.`;
  else text = `${fmtCount(n)} events, newest first — scroll down for older ones.`;
  ui.status.textContent = text;
}

async function loadHistogram() {
  const v = view;
  if (!v) return;
  hist.loading();
  try {
    const h = await histogram({
      ...query(), created_to: live.on ? new Date().toISOString() : v.to,
      bucket: 'auto', by: filters.by === 'none' ? undefined : filters.by, top: 10,
    }, { signal: v.ctrl.signal });
    if (v !== view) return;
    hist.render(h, filters.tz);
    if (h.by === 'type' || h.by === 'consumer') suggest({ [h.by]: h.series });
  } catch (e) {
    if (v !== view || (e instanceof DOMException && e.name === 'AbortError')) return;
    hist.message(e instanceof ApiError && e.status === 404
      ? 'The histogram is not available on this server.'
      : `No histogram: ${e instanceof ApiError ? e.describe() : String(e)}`);
    $('h-total').textContent = '';
  }
}

// ---- live -----------------------------------------------------------------------------------

/** Whether the reader has scrolled the first rows out of sight. */
const scrolledAway = () => table.tbody.getBoundingClientRect().top < 0;

const live = new Live({
  params: () => ({ type: filters.type, consumer: filters.consumer, created_from: table.newest() ?? view?.from ?? '' }),
  deliver: (events, tier) => {
    if (table.add([...events].reverse(), tier, 'top')) {
      suggest({ type: events.map((e) => e.type), consumer: events.map((e) => e.consumer) });
      updateStatus();
    }
  },
  shown: (id) => table.rows.has(id),
  paused: scrolledAway,
  status: (text, paused, held) => {
    ui.liveStatus.textContent = text;
    ui.liveStatus.dataset.paused = String(paused);
    ui.liveBanner.hidden = !paused;
    ui.liveBannerText.textContent = `${fmtCount(held)} new event${held === 1 ? '' : 's'} — paused while you scroll`;
  },
  failed: (e) => showError(e),
});

/** @param {boolean} on */
function setLive(on) {
  ui.live.checked = on;
  clearInterval(histTimer);
  if (!on) {
    live.stop();
    return;
  }
  // The range's end follows now: a custom range keeps its start and loses its end.
  if (filters.range === 'custom' && filters.to) {
    navigate({ ...filters, to: null });
  }
  live.start();
  histTimer = setInterval(() => loadHistogram(), 30_000);
}

ui.live.addEventListener('change', () => setLive(ui.live.checked));
$('live-show').addEventListener('click', () => {
  live.flush();
  ui.results.scrollIntoView({ block: 'start' });
});
let scrollPending = false;
window.addEventListener('scroll', () => {
  if (scrollPending || !live.on) return;
  scrollPending = true;
  requestAnimationFrame(() => {
    scrollPending = false;
    if (!scrolledAway() && live.heldCount) live.flush();
    else live.report();
  });
}, { passive: true });

// ---- export ---------------------------------------------------------------------------------

/** @param {'ndjson'|'csv'} format */
async function runExport(format) {
  if (!view) return;
  const q = { ...query(), created_to: live.on ? new Date().toISOString() : view.to };
  ui.exportButtons.forEach((b) => { b.disabled = true; });
  ui.exportStatus.dataset.state = 'running';
  ui.exportStatus.textContent = 'Exporting… 0 events';
  try {
    const n = await exportView(format, q, (c) => {
      ui.exportStatus.textContent = `Exporting… ${fmtCount(c)} events`;
    }, new AbortController().signal);
    ui.exportStatus.textContent = `Exported ${fmtCount(n)} event${n === 1 ? '' : 's'} (${format.toUpperCase()}).`;
    ui.exportStatus.dataset.state = 'done';
    ui.exportStatus.dataset.count = String(n);
  } catch (e) {
    ui.exportStatus.textContent = 'Export failed.';
    ui.exportStatus.dataset.state = 'failed';
    showError(e);
  } finally {
    ui.exportButtons.forEach((b) => { b.disabled = false; });
  }
}
$('export-ndjson').addEventListener('click', () => runExport('ndjson'));
$('export-csv').addEventListener('click', () => runExport('csv'));

// ---- form events ----------------------------------------------------------------------------

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  apply();
});
ui.range.addEventListener('change', () => {
  if (ui.range.value === 'custom') ui.from.focus();
  else apply();
});
for (const input of [ui.from, ui.to]) {
  input.addEventListener('input', () => { ui.range.value = 'custom'; });
}
ui.tz.addEventListener('change', () => {
  // The inputs keep the same instants, written in the other zone.
  const tz = ui.tz.value === 'utc' ? 'utc' : 'local';
  const from = fromInput(ui.from.value, formTz);
  const to = fromInput(ui.to.value, formTz);
  formTz = tz;
  ui.from.value = toInput(from, tz);
  ui.to.value = toInput(to, tz);
  apply();
});
ui.by.addEventListener('change', () => {
  const by = /** @type {import('./state.js').By} */ (ui.by.value);
  const f = { ...filters, by };
  history.pushState(null, '', toQuery(f));
  filters = f;
  loadHistogram();
});
ui.errorRetry.addEventListener('click', () => {
  if (view && table.count && view.failed) {
    view.failed = false;
    hideError();
    loadPage();
  } else {
    loadView();
  }
});
ui.errorSignin.addEventListener('click', () => signOut());
window.addEventListener('popstate', () => {
  filters = fromQuery(location.search);
  if (getKey()) loadView();
});

// ---- keyboard -------------------------------------------------------------------------------

document.addEventListener('keydown', (e) => {
  if (ui.app.hidden || e.ctrlKey || e.metaKey || e.altKey || ui.help.open) return;
  const t = /** @type {HTMLElement} */ (e.target);
  if (e.key === 'Escape' && drawer.isOpen) {
    e.preventDefault();
    drawer.close();
    return;
  }
  if (t.closest('input, select, textarea, [contenteditable]')) return;
  switch (e.key) {
    case '/':
      e.preventDefault();
      ui.type.focus();
      ui.type.select();
      break;
    case 'j':
    case 'ArrowDown':
      e.preventDefault();
      table.move(1);
      break;
    case 'k':
    case 'ArrowUp':
      e.preventDefault();
      table.move(-1);
      break;
    case 'Enter':
      if (t.closest('button, a, summary, tr.event-row')) return;
      e.preventDefault();
      table.openSelected();
      break;
    case 'l':
      setLive(!ui.live.checked);
      break;
    case '?':
      ui.help.showModal();
      break;
    default:
  }
});
$('help-button').addEventListener('click', () => ui.help.showModal());

// ---- signing in and out ---------------------------------------------------------------------

/** @param {unknown} e */
function signinMessage(e) {
  if (!(e instanceof ApiError)) return String(e);
  if (e.status === 401) return 'This key was refused. Check that you pasted all of it, or ask your administrator for a new one.';
  if (e.status === 403) return 'This key may not read events: it lacks the "read" right. Ask your administrator for a key with the read right.';
  return e.describe();
}

ui.signin.addEventListener('submit', async (e) => {
  e.preventDefault();
  const key = ui.apiKey.value.trim();
  if (!key) {
    ui.signinError.textContent = 'Enter your API key.';
    return;
  }
  ui.signinSubmit.disabled = true;
  ui.signinError.textContent = '';
  try {
    await find({ limit: 1, order: 'desc' }, { key });
    setKey(key);
    ui.apiKey.value = '';
    showApp();
  } catch (err) {
    // The key is checked before the store is asked: a busy or unavailable store means the
    // key was accepted. The view then says what is wrong, and retries.
    if (err instanceof ApiError && (err.status === 503 || err.status === 429)) {
      setKey(key);
      ui.apiKey.value = '';
      showApp();
      return;
    }
    ui.signinError.textContent = signinMessage(err);
    ui.apiKey.focus();
  } finally {
    ui.signinSubmit.disabled = false;
  }
});

$('signout').addEventListener('click', () => signOut());

function signOut() {
  setLive(false);
  view?.ctrl.abort();
  view = null;
  clearKey();
  drawer.close();
  table.clear();
  hideError();
  ui.app.hidden = true;
  ui.signinView.hidden = false;
  ui.signinError.textContent = '';
  ui.apiKey.focus();
}

function showApp() {
  ui.signinView.hidden = true;
  ui.app.hidden = false;
  history.replaceState(null, '', toQuery(filters));
  suggest({});
  loadView();
}

if (getKey()) {
  showApp();
} else {
  ui.signinView.hidden = false;
  ui.apiKey.focus();
}
