// Rendering of API objects shared by the playground and the threads browser: messages (with
// citations as footnotes and sandbox links as downloads), run steps (code, logs, images, search
// results, function calls), runs (status, usage, timing), and the stream accumulation rules.
import { h, clear, badge, rawJson, time } from './dom.js';
import { renderMarkdown, CITE_OPEN, CITE_CLOSE } from './markdown.js';
import { download, fileBlobUrl, get } from './api.js';
import { highlight } from './highlight.js';

// --- images and files ---------------------------------------------------------------------------

export function fileImage(fileId, alt) {
  const img = h('img', { alt: alt || `image ${fileId}`, class: 'inline-image', loading: 'lazy' });
  const box = h('figure', { class: 'image' }, img, h('figcaption', {},
    h('button', { type: 'button', class: 'link', onclick: () => download(fileId).catch(() => {}) }, `↓ ${fileId}`)));
  fileBlobUrl(fileId).then((src) => { img.src = src; }).catch(() => { img.replaceWith(h('span', { class: 'muted' }, `(image ${fileId} unavailable)`)); });
  return box;
}

const names = new Map();
export function fileName(fileId) {
  if (!names.has(fileId)) {
    const p = get(`/files/${encodeURIComponent(fileId)}`).then((f) => f.filename);
    names.set(fileId, p);
    p.catch(() => names.delete(fileId));
  }
  return names.get(fileId);
}

// --- messages -----------------------------------------------------------------------------------

// ctx.citation(fileId, quoteText) opens the cited file and chunk.
export function renderMessage(message, ctx = {}) {
  const body = h('div', { class: 'content' });
  const footnotes = [];
  for (const block of message.content || []) {
    if (block.type === 'text') body.append(renderText(block.text || { value: '' }, footnotes, ctx));
    else if (block.type === 'image_file') body.append(fileImage(block.image_file.file_id));
    else if (block.type === 'image_url') {
      const u = String(block.image_url?.url || '');
      body.append(/^https?:/i.test(u) ? h('a', { href: u, target: '_blank', rel: 'noopener noreferrer' }, `[image] ${u}`) : h('span', { class: 'muted' }, '(inline image)'));
    } else if (block.type === 'refusal') body.append(h('p', { class: 'refusal' }, block.refusal));
  }
  if (footnotes.length) {
    body.append(h('ol', { class: 'footnotes', 'aria-label': 'Citations' }, footnotes.map((f) => {
      const label = h('span', {}, f.fileId);
      fileName(f.fileId).then((n) => { label.textContent = n; }).catch(() => {});
      return h('li', { id: f.id }, h('button', { type: 'button', class: 'link cite-open', onclick: () => ctx.citation?.(f.fileId, f.text) }, label));
    })));
  }
  const attachments = (message.attachments || []).map((a) => {
    const label = h('span', {}, a.file_id);
    fileName(a.file_id).then((n) => { label.textContent = n; }).catch(() => {});
    return h('li', {}, 'Attached: ', label, ' ', h('span', { class: 'muted' }, (a.tools || []).map((t) => t.type).join(', ')));
  });
  return h('article', { class: `msg ${message.role}`, 'data-id': message.id },
    h('header', {}, h('strong', {}, message.role === 'user' ? 'User' : 'Assistant'),
      message.status && message.status !== 'completed' ? badge(message.status) : null,
      h('span', { class: 'muted small' }, time(message.created_at))),
    body,
    attachments.length ? h('ul', { class: 'attachments' }, attachments) : null,
    ctx.raw ? rawJson(message) : null);
}

let footnoteSeq = 0;
function renderText(text, footnotes, ctx) {
  // Annotation offsets count code points (the server is Python); JS strings count UTF-16 units.
  const chars = Array.from(text.value || '');
  const anns = [...(text.annotations || [])].filter((a) => Number.isInteger(a.start_index) && Number.isInteger(a.end_index))
    .sort((a, b) => a.start_index - b.start_index);
  const sandboxes = new Map();
  let out = '';
  let pos = 0;
  for (const a of anns) {
    if (a.start_index < pos || a.end_index > chars.length) continue;
    if (a.type === 'file_citation') {
      out += chars.slice(pos, a.start_index).join('');
      const fileId = a.file_citation?.file_id;
      let n = footnotes.findIndex((f) => f.fileId === fileId) + 1;
      if (!n) { footnotes.push({ fileId, text: a.text, id: `fn${++footnoteSeq}` }); n = footnotes.length; }
      out += `${CITE_OPEN}${n}${CITE_CLOSE}`;
      pos = a.end_index;
    } else if (a.type === 'file_path') {
      sandboxes.set(a.text, a.file_path?.file_id);
    }
  }
  out += chars.slice(pos).join('');
  return renderMarkdown(out, {
    cite: (n) => {
      const f = footnotes[n - 1];
      return h('sup', { class: 'cite' }, h('button', { type: 'button', class: 'link', title: 'Open the cited file',
        onclick: () => ctx.citation?.(f.fileId, f.text) }, `[${n}]`));
    },
    sandbox: (url) => {
      const fileId = sandboxes.get(url);
      return fileId ? { fileId, filename: url.split('/').pop() } : null;
    },
    download: (fileId, filename) => download(fileId, filename).catch((e) => ctx.error?.(e)),
    image: (fileId, alt) => fileImage(fileId, alt),
  });
}

// --- steps --------------------------------------------------------------------------------------

export function renderStep(step, ctx = {}) {
  const d = step.step_details || {};
  const parts = [];
  if (d.type === 'message_creation') {
    parts.push(h('p', { class: 'muted small' }, 'Message ', h('code', {}, d.message_creation?.message_id || '')));
  } else {
    for (const call of d.tool_calls || []) parts.push(renderToolCall(call, ctx));
  }
  return h('section', { class: `step ${step.status}`, 'data-id': step.id },
    h('header', {}, h('strong', {}, d.type === 'tool_calls' ? 'Tool calls' : 'Message creation'), badge(step.status),
      h('code', { class: 'small muted' }, step.id)),
    parts,
    step.last_error ? h('p', { class: 'error' }, `${step.last_error.code}: ${step.last_error.message}`) : null,
    step.usage ? h('p', { class: 'muted small' }, usageText(step.usage)) : null,
    rawJson(step));
}

function renderToolCall(call, ctx) {
  if (call.type === 'code_interpreter') {
    const ci = call.code_interpreter || {};
    return h('div', { class: 'call ci' },
      h('div', { class: 'call-title' }, 'Code interpreter'),
      h('div', { class: 'codeblock' }, h('span', { class: 'lang' }, 'python'), h('pre', {}, codeEl(ci.input || '', 'python'))),
      (ci.outputs || []).map((o) => (o.type === 'logs'
        ? h('div', { class: 'logs' }, h('span', { class: 'lang' }, 'output'), h('pre', {}, o.logs))
        : o.type === 'image' && o.image?.file_id ? fileImage(o.image.file_id, 'code interpreter image') : null)));
  }
  if (call.type === 'file_search') {
    const fs = call.file_search || {};
    const results = fs.results || [];
    return h('div', { class: 'call fs' },
      h('div', { class: 'call-title' }, 'File search',
        fs.ranking_options ? h('span', { class: 'muted small' }, ` ranker ${fs.ranking_options.ranker}, threshold ${fs.ranking_options.score_threshold}`) : null),
      results.length ? h('ol', { class: 'results' }, results.map((r) => h('li', {},
        h('div', {}, h('button', { type: 'button', class: 'link', onclick: () => ctx.citation?.(r.file_id, null) }, r.file_name || r.file_id),
          ' ', h('span', { class: 'score' }, `score ${Number(r.score).toFixed(4)}`)),
        (r.content || []).map((c) => h('blockquote', { class: 'chunk' }, c.text))))) : h('p', { class: 'muted small' }, 'No results yet.'));
  }
  if (call.type === 'function') {
    const f = call.function || {};
    return h('div', { class: 'call fn' },
      h('div', { class: 'call-title' }, 'ƒ ', h('code', {}, f.name || ''), h('span', { class: 'muted small' }, ` ${call.id || ''}`)),
      h('div', { class: 'codeblock' }, h('span', { class: 'lang' }, 'arguments'), h('pre', {}, codeEl(pretty(f.arguments), 'json'))),
      f.output !== null && f.output !== undefined ? h('div', { class: 'logs' }, h('span', { class: 'lang' }, 'output'), h('pre', {}, f.output)) : null);
  }
  return h('pre', {}, JSON.stringify(call, null, 2));
}

function codeEl(text, lang) {
  const code = h('code');
  highlight(code, text, lang);
  return code;
}

export function pretty(args) {
  try { return JSON.stringify(JSON.parse(args), null, 2); } catch { return String(args ?? ''); }
}

// --- runs ---------------------------------------------------------------------------------------

export function usageText(u) {
  return u ? `${u.prompt_tokens} prompt + ${u.completion_tokens} completion = ${u.total_tokens} tokens` : '';
}

export function runSummary(run) {
  const ended = run.completed_at || run.failed_at || run.cancelled_at;
  const took = ended && run.started_at ? `${ended - run.started_at} s` : '';
  return h('dl', { class: 'kv' },
    h('dt', {}, 'Status'), h('dd', {}, badge(run.status)),
    h('dt', {}, 'Run'), h('dd', {}, h('code', {}, run.id)),
    h('dt', {}, 'Model'), h('dd', {}, run.model),
    h('dt', {}, 'Created'), h('dd', {}, time(run.created_at)),
    took ? [h('dt', {}, 'Took'), h('dd', {}, took)] : null,
    run.usage ? [h('dt', {}, 'Usage'), h('dd', {}, usageText(run.usage))] : null,
    run.last_error ? [h('dt', {}, 'Last error'), h('dd', { class: 'error' }, `${run.last_error.code}: ${run.last_error.message}`)] : null,
    run.incomplete_details ? [h('dt', {}, 'Incomplete'), h('dd', {}, run.incomplete_details.reason)] : null);
}

// --- stream accumulation (the SDK's rules: strings concatenate, indexed lists merge by index) -------

export function accumulate(target, delta) {
  for (const [key, value] of Object.entries(delta)) {
    if (key === 'index' || key === 'type') { target[key] = value; continue; }
    const cur = target[key];
    if (cur === undefined || cur === null) target[key] = structuredClone(value);
    else if (typeof cur === 'string' && typeof value === 'string') target[key] = cur + value;
    else if (typeof cur === 'number' && typeof value === 'number') target[key] = cur + value;
    else if (Array.isArray(cur) && Array.isArray(value)) {
      for (const item of value) {
        if (item && typeof item === 'object' && Number.isInteger(item.index)) {
          const existing = cur.find((c) => c && c.index === item.index);
          if (existing) accumulate(existing, item);
          else cur.push(structuredClone(item));
        } else cur.push(item);
      }
    } else if (cur && typeof cur === 'object' && value && typeof value === 'object') accumulate(cur, value);
    else target[key] = value;
  }
  return target;
}

export const CITATION_INCLUDE = 'step_details.tool_calls[*].file_search.results[*].content';

// The cited file and the chunks of it that this conversation's searches returned.
export async function showCitation(fileId, steps, marker) {
  const dialog = document.getElementById('citation');
  const chunks = [];
  for (const step of steps) {
    for (const call of step.step_details?.tool_calls || []) {
      for (const r of call.file_search?.results || []) {
        if (r.file_id === fileId) chunks.push(r);
      }
    }
  }
  const title = h('span', {}, fileId);
  fileName(fileId).then((n) => { title.textContent = n; }).catch(() => {});
  clear(dialog.querySelector('.body'),
    h('h2', {}, title),
    h('p', {}, h('button', { type: 'button', onclick: () => download(fileId).catch(() => {}) }, '↓ Download file'), ' ', h('code', { class: 'small' }, fileId)),
    chunks.length ? chunks.map((c) => h('section', { class: 'chunk-view' },
      h('div', { class: 'score' }, `score ${Number(c.score).toFixed(4)}`),
      (c.content || []).map((t) => h('pre', { class: 'wrap' }, t.text)))) : h('p', { class: 'muted' }, 'The chunk text was not recorded for this search.'));
  if (!dialog.open) dialog.showModal();
}
