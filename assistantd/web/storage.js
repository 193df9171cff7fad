// Storage: files (upload with progress, list, download, delete) and vector stores (create, add files,
// live ingestion progress and failures, search with scores, attributes and filters).
import { h, clear, field, badge, bytes, rawJson, time, toast } from './dom.js';
import { get, post, del, upload, download, listAll } from './api.js';

const PURPOSES = ['assistants', 'vision', 'user_data', 'batch', 'fine-tune', 'evals'];

export function storage(root, sub, id) {
  const view = h('section', { class: 'panel storage-body' });
  clear(root, h('div', { class: 'storage' },
    h('nav', { class: 'subnav', 'aria-label': 'Storage' },
      h('a', { href: '#/storage/files', 'aria-current': sub !== 'vector_stores' ? 'page' : null }, 'Files'),
      h('a', { href: '#/storage/vector_stores', 'aria-current': sub === 'vector_stores' ? 'page' : null }, 'Vector stores')),
    view));
  let stop = () => {};
  if (sub === 'vector_stores') stop = id ? vectorStore(view, id) : vectorStores(view);
  else files(view);
  return () => stop();
}

// --- files -------------------------------------------------------------------------------------------

function files(view) {
  const input = h('input', { type: 'file', multiple: true, id: 'upload-input' });
  const purpose = h('select', { id: 'upload-purpose' }, PURPOSES.map((p) => h('option', { value: p }, p)));
  const progress = h('div', { class: 'stack', id: 'uploads' });
  const body = h('tbody');
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  let after = null;

  clear(view, h('h2', {}, 'Files'),
    h('form', { class: 'row wrap upload', onsubmit: async (e) => {
      e.preventDefault();
      const chosen = [...input.files];
      if (!chosen.length) { toast('Choose one or more files first.'); return; }
      input.value = '';
      await Promise.all(chosen.map(async (file) => {
        const bar = h('progress', { max: 1, value: 0, 'aria-label': `Uploading ${file.name}` });
        const pct = h('span', { class: 'small' }, '0%');
        const row = h('div', { class: 'row upload-row' }, h('span', {}, file.name), bar, pct);
        progress.append(row);
        try {
          const made = await upload(file, purpose.value, (f) => { bar.value = f; pct.textContent = `${Math.round(f * 100)}%`; });
          bar.value = 1; pct.textContent = '✓ uploaded';
          body.prepend(fileRow(made));
          setTimeout(() => row.remove(), 3000);
        } catch (err) { pct.textContent = `✗ ${err.message}`; pct.className = 'small error'; }
      }));
    } }, field('File', input), field('Purpose', purpose), h('button', { type: 'submit', id: 'upload-button' }, 'Upload')),
    progress,
    h('div', { class: 'tablewrap' }, h('table', { class: 'grid', id: 'files-table' },
      h('thead', {}, h('tr', {}, ['Name', 'ID', 'Size', 'Purpose', 'Created', ''].map((c) => h('th', {}, c)))), body)),
    more);

  function fileRow(f) {
    const tr = h('tr', { 'data-id': f.id },
      h('td', {}, f.filename), h('td', {}, h('code', { class: 'small' }, f.id)), h('td', {}, bytes(f.bytes)), h('td', {}, f.purpose),
      h('td', { class: 'small' }, time(f.created_at)),
      h('td', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary small', onclick: () => download(f.id, f.filename).catch((e) => toast(e.message)) }, 'Download'),
        h('button', { type: 'button', class: 'danger small', onclick: async () => {
          if (!confirm(`Delete ${f.filename}?`)) return;
          try { await del(`/files/${f.id}`); tr.remove(); } catch (e) { toast(e.message); }
        } }, 'Delete')));
    return tr;
  }
  async function page() {
    try {
      const p = await get('/files', { limit: 50, order: 'desc', after });
      for (const f of p.data) body.append(fileRow(f));
      after = p.has_more ? p.data[p.data.length - 1].id : null;
      more.hidden = !p.has_more;
    } catch (e) { toast(e.message); }
  }
  more.addEventListener('click', page);
  page();
}

// --- vector stores -----------------------------------------------------------------------------------

function counts(c) {
  return `${c.completed}/${c.total} ready` + (c.in_progress ? `, ${c.in_progress} in progress` : '') + (c.failed ? `, ${c.failed} failed` : '') + (c.cancelled ? `, ${c.cancelled} cancelled` : '');
}

function vectorStores(view) {
  const name = h('input', { id: 'vs-name', placeholder: 'Name', required: true });
  const list = h('ul', { class: 'list', id: 'vs-list' });
  clear(view, h('h2', {}, 'Vector stores'),
    h('form', { class: 'row wrap', onsubmit: async (e) => {
      e.preventDefault();
      try { const vs = await post('/vector_stores', { name: name.value }); location.hash = `#/storage/vector_stores/${vs.id}`; } catch (err) { toast(err.message); }
    } }, field('New vector store', name), h('button', { type: 'submit', id: 'vs-create' }, 'Create')),
    list);
  listAll('/vector_stores').then((all) => {
    if (!all.length) list.append(h('li', { class: 'muted' }, 'No vector stores yet.'));
    for (const vs of all) {
      list.append(h('li', {}, h('a', { href: `#/storage/vector_stores/${vs.id}` }, h('strong', {}, vs.name || '(unnamed)'), ' ',
        h('code', { class: 'small' }, vs.id), ' ', badge(vs.status), ' ', h('span', { class: 'small muted' }, `${counts(vs.file_counts)} · ${bytes(vs.usage_bytes)}`))));
    }
  }).catch((e) => toast(e.message));
  return () => {};
}

function vectorStore(view, id) {
  let timer = null;
  let stopped = false;
  const head = h('div');
  const filesBody = h('tbody');
  const picker = h('select', { id: 'vs-add-files', multiple: true, size: 4, 'aria-label': 'Files to add' });
  const attrs = h('textarea', { id: 'vs-add-attributes', rows: 2, class: 'mono', placeholder: '{"category": "manual"}' });
  const newFiles = h('input', { type: 'file', multiple: true, id: 'vs-upload' });
  const query = h('input', { id: 'vs-query', type: 'search', placeholder: 'Search this store', required: true });
  const maxResults = h('input', { id: 'vs-max', type: 'number', min: 1, max: 50, value: 10 });
  const filters = h('textarea', { id: 'vs-filters', rows: 2, class: 'mono', placeholder: '{"type": "eq", "key": "category", "value": "manual"}' });
  const results = h('ol', { class: 'results', id: 'vs-results' });
  const names = new Map();

  clear(view, h('p', {}, h('a', { href: '#/storage/vector_stores' }, '← All vector stores')), head,
    h('div', { class: 'split wide-left' },
      h('section', {},
        h('h3', {}, 'Files'),
        h('div', { class: 'tablewrap' }, h('table', { class: 'grid', id: 'vs-files' },
          h('thead', {}, h('tr', {}, ['File', 'Status', 'Size', 'Attributes', 'Error', ''].map((c) => h('th', {}, c)))), filesBody)),
        h('form', { class: 'stack', onsubmit: async (e) => { e.preventDefault(); await addFiles(); } },
          h('h4', {}, 'Add files'),
          field('Uploaded files', picker, 'Ctrl/Cmd-click to choose several'),
          field('…or upload new ones', newFiles),
          field('Attributes (JSON, optional)', attrs),
          h('button', { type: 'submit', id: 'vs-add' }, 'Add to store'))),
      h('section', {},
        h('h3', {}, 'Search'),
        h('form', { class: 'stack', onsubmit: (e) => { e.preventDefault(); search(); } },
          h('div', { class: 'row query-row' }, field('Query', query), field('Max results', maxResults)),
          field('Filters (JSON, optional)', filters, 'A comparison {type, key, value} or compound {type: "and"|"or", filters: [...]}'),
          h('button', { type: 'submit', id: 'vs-search' }, 'Search')),
        results)));

  async function nameOf(fileId) {
    if (!names.has(fileId)) names.set(fileId, get(`/files/${fileId}`).then((f) => f.filename).catch(() => fileId));
    return names.get(fileId);
  }

  async function refresh() {
    if (stopped) return;
    try {
      const vs = await get(`/vector_stores/${id}`);
      clear(head, h('div', { class: 'row' }, h('h2', {}, vs.name || '(unnamed)'), badge(vs.status)),
        h('p', { class: 'small muted' }, h('code', {}, vs.id), ` · created ${time(vs.created_at)} · ${bytes(vs.usage_bytes)}`),
        h('div', { class: 'ingest', id: 'vs-progress' },
          h('progress', { max: Math.max(vs.file_counts.total, 1), value: vs.file_counts.completed + vs.file_counts.failed + vs.file_counts.cancelled, 'aria-label': 'Ingestion progress' }),
          h('span', {}, counts(vs.file_counts))),
        rawJson(vs));
      const fs = await listAll(`/vector_stores/${id}/files`, {}, 1000);
      const rows = await Promise.all(fs.map(async (f) => h('tr', { 'data-id': f.id, 'data-status': f.status },
        h('td', {}, await nameOf(f.id), h('br'), h('code', { class: 'small muted' }, f.id)),
        h('td', {}, badge(f.status)),
        h('td', {}, bytes(f.usage_bytes)),
        h('td', { class: 'small' }, Object.entries(f.attributes || {}).map(([k, v]) => h('div', {}, h('code', {}, k), ` = ${JSON.stringify(v)}`))),
        h('td', { class: 'small error' }, f.last_error ? `${f.last_error.code}: ${f.last_error.message}` : ''),
        h('td', {}, h('button', { type: 'button', class: 'secondary small', onclick: async () => {
          try { await del(`/vector_stores/${id}/files/${f.id}`); refresh(); } catch (e) { toast(e.message); }
        } }, 'Remove')))));
      filesBody.replaceChildren(...rows);
      if (!rows.length) filesBody.append(h('tr', {}, h('td', { colspan: 6, class: 'muted' }, 'No files yet.')));
      // Live progress: poll while anything is still being ingested.
      if (vs.file_counts.in_progress > 0 && !stopped) timer = setTimeout(refresh, 700);
    } catch (e) { toast(e.message); }
  }

  async function fillPicker() {
    const all = await listAll('/files', { purpose: 'assistants' }).catch(() => []);
    picker.replaceChildren(...all.map((f) => h('option', { value: f.id }, `${f.filename} · ${f.id}`)));
  }

  async function addFiles() {
    let attributes;
    if (attrs.value.trim()) {
      try { attributes = JSON.parse(attrs.value); } catch (e) { toast(`Attributes: ${e.message}`); return; }
    }
    try {
      const ids = [...picker.selectedOptions].map((o) => o.value);
      for (const file of newFiles.files) ids.push((await upload(file, 'assistants')).id);
      newFiles.value = '';
      if (!ids.length) { toast('Choose files to add.'); return; }
      await post(`/vector_stores/${id}/file_batches`, { file_ids: ids, ...(attributes ? { attributes } : {}) });
      clearTimeout(timer);
      await refresh();
      fillPicker();
    } catch (e) { toast(e.message); }
  }

  async function search() {
    const body = { query: query.value, max_num_results: Number(maxResults.value) || 10 };
    if (filters.value.trim()) {
      try { body.filters = JSON.parse(filters.value); } catch (e) { toast(`Filters: ${e.message}`); return; }
    }
    try {
      const r = await post(`/vector_stores/${id}/search`, body);
      results.replaceChildren(...r.data.map((d) => h('li', { class: 'result' },
        h('div', { class: 'row' }, h('strong', {}, d.filename), h('span', { class: 'score' }, `score ${Number(d.score).toFixed(4)}`)),
        Object.keys(d.attributes || {}).length ? h('div', { class: 'small' }, Object.entries(d.attributes).map(([k, v]) => h('span', { class: 'attr' }, `${k}=${JSON.stringify(v)}`))) : null,
        (d.content || []).map((c) => h('blockquote', { class: 'chunk' }, c.text)))));
      if (!r.data.length) results.append(h('li', { class: 'muted' }, 'Nothing matched.'));
    } catch (e) { toast(e.message); }
  }

  refresh();
  fillPicker();
  return () => { stopped = true; clearTimeout(timer); };
}
