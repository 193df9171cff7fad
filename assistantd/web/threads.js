// Threads: every conversation newest first (our GET /v1/threads extension), filtered by assistant and
// metadata; one thread's messages, runs, steps and usage, and the raw JSON of each.
import { h, clear, field, badge, rawJson, time, toast } from './dom.js';
import { get, listAll } from './api.js';
import { renderMessage, renderStep, runSummary, showCitation, CITATION_INCLUDE } from './render.js';

export function threads(root, threadId) {
  const listEl = h('ul', { class: 'list', id: 'thread-list' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  const detail = h('section', { class: 'panel thread-detail', 'aria-label': 'Thread' });
  const assistantSel = h('select', { id: 'filter-assistant' }, h('option', { value: '' }, 'Any assistant'));
  const metaKey = h('input', { id: 'filter-key', placeholder: 'key' });
  const metaValue = h('input', { id: 'filter-value', placeholder: 'value' });
  let after = null;

  const filters = h('form', { class: 'stack filters', onsubmit: (e) => { e.preventDefault(); reload(); } },
    field('Assistant', assistantSel),
    h('div', { class: 'row two' }, field('Metadata key', metaKey), field('equals', metaValue)),
    h('button', { type: 'submit' }, 'Filter'));

  clear(root, h('div', { class: 'threads' },
    h('aside', { class: 'panel thread-list' }, h('h2', {}, 'Threads'), filters, listEl, more),
    detail));

  function query() {
    const q = [['limit', '30'], ['order', 'desc']];
    if (assistantSel.value) q.push(['assistant_id', assistantSel.value]);
    if (metaKey.value.trim()) q.push([`metadata[${metaKey.value.trim()}]`, metaValue.value]);
    if (after) q.push(['after', after]);
    return q;
  }

  async function page() {
    try {
      const p = await get('/threads', query());
      for (const t of p.data) {
        const meta = Object.entries(t.metadata || {}).map(([k, v]) => `${k}=${v}`).join(', ');
        listEl.append(h('li', { class: t.id === threadId ? 'current' : '' }, h('a', { href: `#/threads/${t.id}` },
          h('code', {}, t.id), h('span', { class: 'muted small' }, time(t.created_at)), meta ? h('span', { class: 'small' }, meta) : null)));
      }
      after = p.has_more ? p.last_id : null;
      more.hidden = !p.has_more;
      if (!listEl.childElementCount) listEl.append(h('li', { class: 'muted' }, 'No threads match.'));
    } catch (e) { toast(e.message); }
  }
  function reload() { after = null; listEl.replaceChildren(); page(); }
  more.addEventListener('click', page);

  listAll('/assistants').then((all) => {
    for (const a of all) assistantSel.append(h('option', { value: a.id }, `${a.name || '(unnamed)'} · ${a.id}`));
  }).catch(() => {});
  reload();

  if (!threadId) {
    clear(detail, h('p', { class: 'muted' }, 'Pick a thread to see its messages, runs and steps.'));
    return;
  }
  openThread(detail, threadId);
}

async function openThread(detail, id) {
  const steps = [];
  const citation = (fileId, marker) => showCitation(fileId, steps, marker);
  const messagesEl = h('div', { class: 'messages static', id: 'thread-messages' });
  const runsEl = h('div', { class: 'stack', id: 'thread-runs' });
  const older = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load earlier messages');
  let olderAfter = null;
  try {
    const thread = await get(`/threads/${id}`);
    const meta = Object.entries(thread.metadata || {});
    clear(detail,
      h('div', { class: 'row' }, h('h2', {}, 'Thread ', h('code', {}, thread.id)), h('span', { class: 'spacer' }),
        h('a', { class: 'button', href: `#/playground/${thread.id}` }, 'Continue in playground')),
      h('p', { class: 'muted small' }, `Created ${time(thread.created_at)}`, meta.length ? ` · ${meta.map(([k, v]) => `${k}=${v}`).join(', ')}` : ''),
      rawJson(thread),
      h('div', { class: 'split' },
        h('section', {}, h('h3', {}, 'Messages'), older, messagesEl),
        h('section', {}, h('h3', {}, 'Runs'), runsEl)));
  } catch (e) {
    clear(detail, h('p', { class: 'error' }, e.message));
    return;
  }
  const ctx = { citation, raw: true };
  const loadMessages = async () => {
    const p = await get(`/threads/${id}/messages`, { limit: 30, order: 'desc', after: olderAfter });
    for (const m of p.data) messagesEl.prepend(renderMessage(m, ctx));
    olderAfter = p.has_more ? p.last_id : null;
    older.hidden = !p.has_more;
  };
  older.addEventListener('click', () => loadMessages().catch((e) => toast(e.message)));
  try {
    await loadMessages();
    const runs = await get(`/threads/${id}/runs`, { limit: 20 });
    if (!runs.data.length) runsEl.append(h('p', { class: 'muted' }, 'No runs.'));
    // Every run at once (newest first), then their steps side by side.
    const loads = runs.data.map((run) => {
      const stepsEl = h('div', { class: 'stack' }, h('p', { class: 'muted small' }, 'Loading steps…'));
      runsEl.append(h('details', { class: 'run', open: runs.data[0] === run, 'data-id': run.id },
        h('summary', {}, badge(run.status), ' ', h('code', {}, run.id), ' ', h('span', { class: 'muted small' }, time(run.created_at))),
        runSummary(run), rawJson(run), h('h4', {}, 'Steps'), stepsEl));
      return get(`/threads/${id}/runs/${run.id}/steps`, { limit: 100, order: 'asc', 'include[]': CITATION_INCLUDE }).then((s) => {
        steps.push(...s.data);
        clear(stepsEl, s.data.map((step) => renderStep(step, { citation })), s.data.length ? null : h('p', { class: 'muted small' }, 'No steps.'));
      });
    });
    await Promise.all(loads);
  } catch (e) { toast(e.message); }
}
