// The playground: edit an assistant, chat on a thread with streaming, watch each run's steps, answer
// function calls, cancel, and read the raw event stream.
import { h, add, clear, field, badge, toast, time } from './dom.js';
import { get, post, del, stream, upload, listAll } from './api.js';
import { renderMessage, renderStep, runSummary, accumulate, showCitation, pretty, CITATION_INCLUDE } from './render.js';
import { validateFunction, EXAMPLE_FUNCTION } from './schema.js';

const LAST_ASSISTANT = 'assistantd.assistant';
const MAX_LOG = 3000;
const ACTIVE = ['queued', 'in_progress', 'requires_action', 'cancelling'];

export function playground(root, threadParam) {
  const state = {
    assistants: [], assistant: null, models: [], files: [], stores: [],
    threadId: threadParam || null, run: null, steps: new Map(), messages: new Map(),
    busy: false, abort: null, firstTokenAt: 0, sentAt: 0, endedAt: 0, olderAfter: null,
  };
  const ui = {};
  const citation = (fileId, marker) => showCitation(fileId, [...state.steps.values()], marker);
  const msgCtx = { citation, error: (e) => toast(e.message) };

  // --- layout -------------------------------------------------------------------------------------
  ui.assistantSelect = h('select', { id: 'assistant-select', onchange: () => pickAssistant(ui.assistantSelect.value) });
  ui.form = h('form', { class: 'stack', id: 'assistant-form', onsubmit: (e) => { e.preventDefault(); saveAssistant(); } });
  ui.messages = h('div', { class: 'messages', id: 'messages', 'aria-live': 'polite' });
  ui.older = h('button', { type: 'button', class: 'secondary', hidden: true, onclick: loadOlder }, 'Load earlier messages');
  ui.threadLabel = h('span', { class: 'muted small', id: 'thread-label' });
  ui.input = h('textarea', { id: 'chat-input', rows: 3, placeholder: 'Message the assistant (Enter sends, Shift+Enter for a new line)', 'aria-label': 'Message',
    onkeydown: (e) => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); } } });
  ui.attach = h('input', { type: 'file', multiple: true, id: 'chat-attach', 'aria-label': 'Attach files' });
  ui.attachFs = h('input', { type: 'checkbox', checked: true, id: 'attach-fs' });
  ui.attachCi = h('input', { type: 'checkbox', checked: true, id: 'attach-ci' });
  ui.send = h('button', { type: 'submit', id: 'send' }, 'Send');
  ui.cancel = h('button', { type: 'button', class: 'danger', id: 'cancel-run', disabled: true, onclick: cancelRun }, 'Cancel run');
  ui.runInfo = h('div', { id: 'run-info' }, h('p', { class: 'muted' }, 'No run yet.'));
  ui.action = h('div', { id: 'required-action' });
  ui.steps = h('div', { id: 'steps', class: 'stack' });
  ui.log = h('ol', { id: 'event-log', class: 'event-log' });
  ui.logCount = h('span', { class: 'muted small' });

  const runTab = h('section', { id: 'tab-run', role: 'tabpanel', 'aria-labelledby': 'tabbtn-run' }, ui.runInfo, ui.action, h('h3', {}, 'Steps'), ui.steps);
  const logTab = h('section', { id: 'tab-log', role: 'tabpanel', 'aria-labelledby': 'tabbtn-log', hidden: true },
    h('div', { class: 'row' }, ui.logCount, h('button', { type: 'button', class: 'secondary small', onclick: () => { ui.log.replaceChildren(); ui.logCount.textContent = ''; } }, 'Clear')), ui.log);
  const tabs = tabBar([['run', 'Run', runTab], ['log', 'Logs', logTab]]);

  clear(root, h('div', { class: 'playground' },
    h('aside', { class: 'panel editor', 'aria-label': 'Assistant' },
      h('div', { class: 'row' }, h('h2', {}, 'Assistant')),
      field('Assistant', ui.assistantSelect),
      ui.form),
    h('section', { class: 'panel chat', 'aria-label': 'Chat' },
      h('div', { class: 'row chat-head' }, h('h2', {}, 'Thread'), ui.threadLabel,
        h('span', { class: 'spacer' }),
        h('button', { type: 'button', class: 'secondary', id: 'new-thread', onclick: newThread }, 'New thread')),
      ui.older, ui.messages,
      h('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); send(); } },
        ui.input,
        h('div', { class: 'row wrap' },
          h('label', { class: 'filepick' }, 'Attach', ui.attach),
          h('label', { class: 'check' }, ui.attachFs, 'file search'),
          h('label', { class: 'check' }, ui.attachCi, 'code interpreter'),
          h('span', { class: 'spacer' }), ui.cancel, ui.send))),
    h('aside', { class: 'panel inspector', 'aria-label': 'Run inspector' }, tabs, runTab, logTab)));

  // --- assistant editor ----------------------------------------------------------------------------
  async function loadLists() {
    const [assistants, models, files, stores] = await Promise.all([
      listAll('/assistants', { order: 'desc' }),
      get('/models').then((r) => r.data).catch(() => []),
      listAll('/files', { purpose: 'assistants' }).catch(() => []),
      listAll('/vector_stores').catch(() => []),
    ]);
    Object.assign(state, { assistants, models, files, stores });
  }

  function fillAssistantSelect() {
    clear(ui.assistantSelect, h('option', { value: '' }, '+ New assistant'),
      state.assistants.map((a) => h('option', { value: a.id, selected: state.assistant?.id === a.id }, `${a.name || '(unnamed)'} · ${a.id}`)));
  }

  function pickAssistant(id) {
    state.assistant = state.assistants.find((a) => a.id === id) || null;
    if (state.assistant) localStorage.setItem(LAST_ASSISTANT, state.assistant.id);
    buildForm(state.assistant);
  }

  function buildForm(a) {
    const tools = a?.tools || [];
    const has = (t) => tools.some((x) => x.type === t);
    const res = a?.tool_resources || {};
    const f = {};
    f.name = h('input', { id: 'a-name', value: a?.name || '', maxlength: 256 });
    f.instructions = h('textarea', { id: 'a-instructions', rows: 4, value: a?.instructions || '' });
    const modelIds = state.models.map((m) => m.id);
    if (a?.model && !modelIds.includes(a.model)) modelIds.unshift(a.model);
    f.model = h('select', { id: 'a-model' }, modelIds.map((m) => h('option', { value: m, selected: m === a?.model }, m)));
    if (!modelIds.length) f.model.append(h('option', { value: '' }, 'no models: configure an upstream'));
    f.temperature = h('input', { id: 'a-temperature', type: 'number', min: 0, max: 2, step: 0.1, value: a?.temperature ?? 1 });
    f.top_p = h('input', { id: 'a-top-p', type: 'number', min: 0, max: 1, step: 0.05, value: a?.top_p ?? 1 });
    const rf = a?.response_format;
    const rfType = typeof rf === 'object' && rf ? rf.type : 'auto';
    f.rf = h('select', { id: 'a-response-format' }, ['auto', 'text', 'json_object', 'json_schema'].map((t) => h('option', { value: t, selected: t === rfType }, t)));
    f.rfSchema = h('textarea', { id: 'a-json-schema', rows: 5, class: 'mono', value: rfType === 'json_schema' ? JSON.stringify(rf.json_schema, null, 2) : '{\n  "name": "answer",\n  "schema": {"type": "object", "properties": {}}\n}' });
    const rfSchemaField = field('JSON schema', f.rfSchema);
    rfSchemaField.hidden = rfType !== 'json_schema';
    f.rf.addEventListener('change', () => { rfSchemaField.hidden = f.rf.value !== 'json_schema'; });

    f.ci = h('input', { type: 'checkbox', id: 't-code', checked: has('code_interpreter') });
    const ciFiles = new Set(res.code_interpreter?.file_ids || []);
    f.ciFiles = h('select', { id: 't-code-files', multiple: true, size: 3, 'aria-label': 'Code interpreter files' },
      state.files.map((x) => h('option', { value: x.id, selected: ciFiles.has(x.id) }, `${x.filename} · ${x.id}`)));
    f.ciUpload = h('input', { type: 'file', multiple: true, id: 't-code-upload', onchange: async () => {
      for (const file of f.ciUpload.files) {
        try {
          const made = await upload(file, 'assistants');
          state.files.unshift(made);
          f.ciFiles.prepend(h('option', { value: made.id, selected: true }, `${made.filename} · ${made.id}`));
          f.ci.checked = true;
        } catch (e) { toast(e.message); }
      }
      f.ciUpload.value = '';
    } });
    f.fs = h('input', { type: 'checkbox', id: 't-search', checked: has('file_search') });
    const vsIds = res.file_search?.vector_store_ids || [];
    f.fsStore = h('select', { id: 't-search-store', 'aria-label': 'Vector store' }, h('option', { value: '' }, '(none)'),
      state.stores.map((s) => h('option', { value: s.id, selected: vsIds.includes(s.id) }, `${s.name || '(unnamed)'} · ${s.id}`)));
    f.functions = h('div', { class: 'stack', id: 'functions' });
    for (const t of tools.filter((x) => x.type === 'function')) f.functions.append(functionEditor(t.function));
    f.metadata = h('div', { class: 'stack', id: 'metadata' });
    for (const [k, v] of Object.entries(a?.metadata || {})) f.metadata.append(metaRow(k, v));

    ui.fields = f;
    clear(ui.form,
      field('Name', f.name),
      field('Instructions', f.instructions),
      field('Model', f.model),
      h('div', { class: 'row two' }, field('Temperature', f.temperature), field('Top P', f.top_p)),
      field('Response format', f.rf), rfSchemaField,
      h('fieldset', {}, h('legend', {}, 'Tools'),
        h('label', { class: 'check' }, f.ci, 'Code interpreter'),
        field('Files for the code interpreter', f.ciFiles, 'Ctrl/Cmd-click to choose several'),
        field('…or upload files for it', f.ciUpload),
        h('label', { class: 'check' }, f.fs, 'File search'),
        field('Vector store', f.fsStore),
        h('div', { class: 'row' }, h('strong', {}, 'Functions'), h('span', { class: 'spacer' }),
          h('button', { type: 'button', class: 'secondary small', id: 'add-function', onclick: () => { const ed = functionEditor(EXAMPLE_FUNCTION); f.functions.append(ed); ed.querySelector('textarea').focus(); } }, '+ Function')),
        f.functions),
      h('fieldset', {}, h('legend', {}, 'Metadata'), f.metadata,
        h('button', { type: 'button', class: 'secondary small', onclick: () => { const r = metaRow('', ''); f.metadata.append(r); r.querySelector('input').focus(); } }, '+ Key')),
      h('div', { class: 'row' },
        h('button', { type: 'submit', id: 'save-assistant' }, a ? 'Save' : 'Create assistant'),
        a ? h('button', { type: 'button', class: 'danger', onclick: deleteAssistant }, 'Delete') : null,
        h('span', { class: 'spacer' }), a ? h('code', { class: 'small muted' }, a.id) : null));
  }

  function functionEditor(def) {
    const ta = h('textarea', { class: 'mono function-json', rows: 10, spellcheck: 'false', 'aria-label': 'Function definition (JSON)', value: JSON.stringify(def, null, 2) });
    const status = h('div', { class: 'validation', 'aria-live': 'polite' });
    const check = () => {
      const { errors } = validateFunction(ta.value);
      ta.setAttribute('aria-invalid', errors.length ? 'true' : 'false');
      clear(status, errors.length ? h('ul', { class: 'error' }, errors.map((e) => h('li', {}, e))) : h('span', { class: 'ok' }, '✓ valid function schema'));
      return errors;
    };
    ta.addEventListener('input', check);
    const box = h('div', { class: 'function-editor' }, ta, h('div', { class: 'row' }, status, h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'secondary small', onclick: () => box.remove() }, 'Remove')));
    box.check = check;
    box.value = () => validateFunction(ta.value).value;
    check();
    return box;
  }

  function metaRow(k, v) {
    const row = h('div', { class: 'row meta-row' },
      h('input', { value: k, placeholder: 'key', maxlength: 64, 'aria-label': 'Metadata key' }),
      h('input', { value: v, placeholder: 'value', maxlength: 512, 'aria-label': 'Metadata value' }),
      h('button', { type: 'button', class: 'secondary small', 'aria-label': 'Remove key', onclick: () => row.remove() }, '×'));
    return row;
  }

  function formBody() {
    const f = ui.fields;
    const tools = [];
    const resources = {};
    if (f.ci.checked) { tools.push({ type: 'code_interpreter' }); resources.code_interpreter = { file_ids: [...f.ciFiles.selectedOptions].map((o) => o.value) }; }
    if (f.fs.checked) { tools.push({ type: 'file_search' }); resources.file_search = { vector_store_ids: f.fsStore.value ? [f.fsStore.value] : [] }; }
    const problems = [];
    for (const ed of f.functions.children) {
      const errs = ed.check();
      if (errs.length) problems.push(...errs); else tools.push({ type: 'function', function: ed.value() });
    }
    let responseFormat = f.rf.value === 'auto' ? 'auto' : { type: f.rf.value };
    if (f.rf.value === 'json_schema') {
      try { responseFormat = { type: 'json_schema', json_schema: JSON.parse(f.rfSchema.value) }; } catch (e) { problems.push(`Response format JSON schema: ${e.message}`); }
    }
    const metadata = {};
    for (const row of f.metadata.children) {
      const [k, v] = row.querySelectorAll('input');
      if (k.value.trim()) metadata[k.value.trim()] = v.value;
    }
    if (!f.model.value) problems.push('Pick a model.');
    return { problems, body: {
      name: f.name.value || null, instructions: f.instructions.value || null, model: f.model.value,
      temperature: Number(f.temperature.value), top_p: Number(f.top_p.value), response_format: responseFormat,
      tools, tool_resources: resources, metadata,
    } };
  }

  async function saveAssistant() {
    const { problems, body } = formBody();
    if (problems.length) { toast(`Fix the assistant first: ${problems[0]}`); return; }
    try {
      const saved = state.assistant ? await post(`/assistants/${state.assistant.id}`, body) : await post('/assistants', body);
      const i = state.assistants.findIndex((x) => x.id === saved.id);
      if (i >= 0) state.assistants[i] = saved; else state.assistants.unshift(saved);
      state.assistant = saved;
      localStorage.setItem(LAST_ASSISTANT, saved.id);
      fillAssistantSelect();
      buildForm(saved);
      toast(`Saved ${saved.name || saved.id}`, 'ok');
    } catch (e) { toast(e.message); }
  }

  async function deleteAssistant() {
    if (!state.assistant || !confirm(`Delete assistant ${state.assistant.name || state.assistant.id}?`)) return;
    try {
      await del(`/assistants/${state.assistant.id}`);
      state.assistants = state.assistants.filter((x) => x.id !== state.assistant.id);
      state.assistant = null;
      fillAssistantSelect();
      buildForm(null);
    } catch (e) { toast(e.message); }
  }

  // --- thread and messages -------------------------------------------------------------------------
  function showThreadLabel() {
    clear(ui.threadLabel, state.threadId ? [h('code', {}, state.threadId), ' ', h('a', { href: `#/threads/${state.threadId}` }, 'open in Threads')] : 'new thread (created on first message)');
  }

  function newThread() {
    if (state.busy) return;
    state.threadId = null;
    state.messages.clear();
    state.steps.clear();
    state.run = null;
    ui.messages.replaceChildren();
    ui.steps.replaceChildren();
    ui.action.replaceChildren();
    clear(ui.runInfo, h('p', { class: 'muted' }, 'No run yet.'));
    ui.older.hidden = true;
    if (location.hash !== '#/playground') history.replaceState(null, '', '#/playground');
    showThreadLabel();
    ui.input.focus();
  }

  async function loadThread(id) {
    try {
      const page = await get(`/threads/${id}/messages`, { limit: 20, order: 'desc' });
      state.threadId = id;
      for (const m of page.data.reverse()) putMessage(m, false);
      state.olderAfter = page.has_more ? page.last_id : null;
      ui.older.hidden = !page.has_more;
      const runs = await get(`/threads/${id}/runs`, { limit: 5 });
      for (const run of runs.data.reverse()) {
        const steps = await get(`/threads/${id}/runs/${run.id}/steps`, { limit: 100, order: 'asc', 'include[]': CITATION_INCLUDE });
        for (const s of steps.data) state.steps.set(s.id, s);
        state.run = run;
      }
      if (state.run) { renderRun(); renderSteps(); }
      showThreadLabel();
      ui.messages.scrollTop = ui.messages.scrollHeight;
    } catch (e) { toast(`Could not open thread: ${e.message}`); }
  }

  async function loadOlder() {
    if (!state.olderAfter) return;
    const page = await get(`/threads/${state.threadId}/messages`, { limit: 20, order: 'desc', after: state.olderAfter });
    for (const m of page.data) ui.messages.prepend(renderMessage(m, msgCtx));
    state.olderAfter = page.has_more ? page.last_id : null;
    ui.older.hidden = !page.has_more;
  }

  const pending = new Set();
  function putMessage(message, scroll = true) {
    state.messages.set(message.id, message);
    const fresh = renderMessage(message, msgCtx);
    const old = ui.messages.querySelector(`[data-id="${CSS.escape(message.id)}"]`);
    if (old) old.replaceWith(fresh); else ui.messages.append(fresh);
    if (scroll) {
      ui.messages.scrollTop = ui.messages.scrollHeight;
      // Images arrive after the text: keep the newest content in view when they do.
      for (const img of fresh.querySelectorAll('img')) img.addEventListener('load', () => { ui.messages.scrollTop = ui.messages.scrollHeight; }, { once: true });
    }
  }
  function scheduleMessage(id) {
    if (pending.has(id)) return;
    pending.add(id);
    requestAnimationFrame(() => { pending.delete(id); const m = state.messages.get(id); if (m) putMessage(m); });
  }

  // --- sending and streaming -------------------------------------------------------------------------
  async function send() {
    if (state.busy) return;
    const text = ui.input.value.trim();
    if (!text && !ui.attach.files.length) return;
    if (!state.assistant) { toast('Create or pick an assistant first (left panel).'); return; }
    setBusy(true);
    try {
      const attachments = [];
      const tools = [];
      if (ui.attachFs.checked) tools.push({ type: 'file_search' });
      if (ui.attachCi.checked) tools.push({ type: 'code_interpreter' });
      for (const file of ui.attach.files) {
        const up = await upload(file, 'assistants');
        attachments.push({ file_id: up.id, tools });
      }
      const body = { role: 'user', content: text || '(see the attached files)', ...(attachments.length ? { attachments } : {}) };
      if (!state.threadId) {
        const thread = await post('/threads', {});
        state.threadId = thread.id;
        history.replaceState(null, '', `#/playground/${thread.id}`);
        showThreadLabel();
      }
      const message = await post(`/threads/${state.threadId}/messages`, body);
      putMessage(message);
      ui.input.value = '';
      ui.attach.value = '';
      state.steps.clear();
      ui.steps.replaceChildren();
      await consume(stream(`/threads/${state.threadId}/runs`, { assistant_id: state.assistant.id }, { query: { 'include[]': CITATION_INCLUDE } }));
    } catch (e) {
      toast(e.message);
    } finally {
      setBusy(false);
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    ui.send.disabled = busy;
    ui.send.textContent = busy ? 'Running…' : 'Send';
  }

  async function consume(events) {
    state.sentAt = performance.now();
    state.firstTokenAt = 0;
    state.endedAt = 0;
    try {
      for await (const ev of events) {
        logEvent(ev);
        handle(ev);
      }
    } finally {
      state.endedAt = performance.now();
      await settleRun();
      renderRun();
      await refreshSteps();
    }
  }

  function handle({ event, data }) {
    if (event === 'thread.message.delta') {
      if (!state.firstTokenAt) state.firstTokenAt = performance.now();
      const m = state.messages.get(data.id);
      if (m) { accumulate(m, { content: data.delta.content || [] }); scheduleMessage(data.id); }
    } else if (event.startsWith('thread.message.')) {
      putMessage(data);
    } else if (event === 'thread.run.step.delta') {
      const s = state.steps.get(data.id);
      if (s) { accumulate(s, { step_details: data.delta.step_details || {} }); renderStep1(s); }
    } else if (event.startsWith('thread.run.step.')) {
      state.steps.set(data.id, data);
      renderStep1(data);
    } else if (event.startsWith('thread.run.')) {
      state.run = data;
      renderRun();
    } else if (event === 'error') {
      toast(`Stream error: ${data?.error?.message || JSON.stringify(data)}`);
    }
  }

  async function settleRun() {
    // A stream that ended early (cancelled, dropped) leaves the run mid-way: ask for where it ended up.
    const run = state.run;
    if (!run || !['queued', 'in_progress', 'cancelling'].includes(run.status)) return;
    for (let i = 0; i < 20; i++) {
      try { state.run = await get(`/threads/${run.thread_id}/runs/${run.id}`); } catch { return; }
      if (!ACTIVE.includes(state.run.status) || state.run.status === 'requires_action') return;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async function refreshSteps() {
    // The final steps with the searched chunks' text, which the citation view shows.
    const run = state.run;
    if (!run || !state.threadId) return;
    try {
      const steps = await get(`/threads/${state.threadId}/runs/${run.id}/steps`, { limit: 100, order: 'asc', 'include[]': CITATION_INCLUDE });
      for (const s of steps.data) state.steps.set(s.id, s);
      renderSteps();
    } catch { /* the live view stays */ }
  }

  function renderStep1(step) {
    const fresh = renderStep(step, { citation });
    const old = ui.steps.querySelector(`[data-id="${CSS.escape(step.id)}"]`);
    if (old) {
      // Keep any open raw-JSON view open across updates.
      if (old.querySelector('details[open]')) fresh.querySelector('details').open = true;
      old.replaceWith(fresh);
    } else ui.steps.append(fresh);
  }
  function renderSteps() {
    ui.steps.replaceChildren();
    for (const s of state.steps.values()) if (!state.run || s.run_id === state.run.id) renderStep1(s);
  }

  function renderRun() {
    const run = state.run;
    if (!run) return;
    const timing = [];
    if (state.sentAt && state.firstTokenAt) timing.push(`first token ${Math.round(state.firstTokenAt - state.sentAt)} ms`);
    if (state.sentAt && state.endedAt) timing.push(`stream ${Math.round(state.endedAt - state.sentAt)} ms`);
    clear(ui.runInfo, runSummary(run), timing.length ? h('p', { class: 'muted small', id: 'timing' }, timing.join(' · ')) : null);
    ui.cancel.disabled = !['queued', 'in_progress', 'requires_action'].includes(run.status);
    if (run.status === 'requires_action') renderActionForm(run);
    else ui.action.replaceChildren();
  }

  function renderActionForm(run) {
    const calls = run.required_action?.submit_tool_outputs?.tool_calls || [];
    const inputs = calls.map((c) => h('textarea', { rows: 3, class: 'mono', 'aria-label': `Output of ${c.function.name}`, placeholder: `What ${c.function.name} returned`, 'data-call': c.id }));
    const form = h('form', { class: 'action-form', id: 'tool-outputs-form', onsubmit: async (e) => {
      e.preventDefault();
      const tool_outputs = calls.map((c, i) => ({ tool_call_id: c.id, output: inputs[i].value }));
      setBusy(true);
      ui.action.replaceChildren(h('p', { class: 'muted' }, 'Submitting outputs…'));
      try {
        await consume(stream(`/threads/${run.thread_id}/runs/${run.id}/submit_tool_outputs`, { tool_outputs }));
      } catch (err) { toast(err.message); } finally { setBusy(false); }
    } },
    h('h3', {}, 'Requires action: submit tool outputs'),
    calls.map((c, i) => h('div', { class: 'field' },
      h('div', {}, 'ƒ ', h('code', {}, c.function.name), ' ', h('span', { class: 'muted small' }, c.id)),
      h('pre', { class: 'args' }, pretty(c.function.arguments)),
      inputs[i])),
    h('button', { type: 'submit', id: 'submit-outputs' }, 'Submit outputs'));
    ui.action.replaceChildren(form);
    inputs[0]?.focus();
  }

  async function cancelRun() {
    const run = state.run;
    if (!run) return;
    try {
      const answer = await post(`/threads/${run.thread_id}/runs/${run.id}/cancel`, {});
      // The stream may have told us the end already; an older status must not replace it.
      if (state.run.id === answer.id && ACTIVE.includes(state.run.status)) { state.run = answer; renderRun(); }
    } catch (e) { toast(e.message); }
  }

  function logEvent(ev) {
    const t = new Date();
    const stamp = `${t.toLocaleTimeString(undefined, { hour12: false })}.${String(t.getMilliseconds()).padStart(3, '0')}`;
    const pre = h('pre', { class: 'json' });
    const d = h('details', {}, h('summary', {}, h('span', { class: 'muted small' }, stamp), ' ', h('code', {}, ev.event)), pre);
    d.addEventListener('toggle', () => { if (d.open && !pre.textContent) pre.textContent = typeof ev.data === 'string' ? ev.data : JSON.stringify(ev.data, null, 2); });
    ui.log.append(h('li', {}, d));
    while (ui.log.childElementCount > MAX_LOG) ui.log.firstElementChild.remove();
    ui.logCount.textContent = `${ui.log.childElementCount} events`;
  }

  // --- start -------------------------------------------------------------------------------------------
  showThreadLabel();
  (async () => {
    try { await loadLists(); } catch (e) { toast(e.message); }
    const last = localStorage.getItem(LAST_ASSISTANT);
    state.assistant = state.assistants.find((a) => a.id === last) || state.assistants[0] || null;
    fillAssistantSelect();
    buildForm(state.assistant);
    if (state.threadId) await loadThread(state.threadId);
  })();
}

export function tabBar(tabs) {
  const buttons = tabs.map(([key, label, panel], i) => h('button', {
    type: 'button', role: 'tab', id: `tabbtn-${key}`, 'aria-controls': panel.id || `tab-${key}`, 'aria-selected': i === 0 ? 'true' : 'false',
    tabindex: i === 0 ? '0' : '-1',
    onclick: () => select(i),
    onkeydown: (e) => {
      if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') { const j = (i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length; select(j); buttons[j].focus(); }
    },
  }, label));
  function select(i) {
    tabs.forEach(([, , panel], j) => { panel.hidden = i !== j; buttons[j].setAttribute('aria-selected', i === j ? 'true' : 'false'); buttons[j].tabIndex = i === j ? 0 : -1; });
  }
  return h('div', { role: 'tablist', class: 'tabs' }, buttons);
}
