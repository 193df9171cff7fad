// A small Markdown renderer that builds DOM nodes directly: text always lands in text nodes, links keep
// only http(s) and mailto targets (sandbox: links become downloads of the file the annotation names),
// and images load only from files of this server. Nothing is ever parsed as HTML.
import { h } from './dom.js';
import { highlight } from './highlight.js';

// Citation markers are swapped for these private-use characters before parsing: \uE000<n>\uE001.
export const CITE_OPEN = '\uE000';
export const CITE_CLOSE = '\uE001';

const SAFE_HREF = /^(https?:\/\/|mailto:)/i;

// ctx: { cite(n) -> Node, sandbox(url) -> {fileId, filename} | null, image(fileId) -> Node }
export function renderMarkdown(text, ctx = {}) {
  const root = h('div', { class: 'md' });
  blocks(String(text).split(/\r\n|\r|\n/), root, ctx);
  return root;
}

const FENCE = /^\s{0,3}(```+|~~~+)\s*([\w+#.-]*)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line)
    || (line.includes('|') && next !== undefined && TABLE_SEP.test(next) && next.includes('-'));
}

function blocks(lines, parent, ctx) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const lang = m[2] || '';
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++; // the closing fence (absent while a stream is still writing the block)
      const code = h('code', { class: lang ? `lang-${lang.replace(/[^\w-]/g, '')}` : null });
      highlight(code, body.join('\n'), lang);
      parent.append(h('div', { class: 'codeblock' }, lang ? h('span', { class: 'lang' }, lang) : null, h('pre', {}, code)));
      continue;
    }
    if ((m = HEADING.exec(line))) {
      parent.append(h(`h${Math.min(m[1].length + 2, 6)}`, {}, inline(m[2], ctx)));
      i++;
      continue;
    }
    if (RULE.test(line)) { parent.append(h('hr')); i++; continue; }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && lines[i].trim() && QUOTE.test(lines[i])) body.push(lines[i++].replace(QUOTE, ''));
      const q = h('blockquote');
      blocks(body, q, ctx);
      parent.append(q);
      continue;
    }
    if ((m = ITEM.exec(line))) {
      i = list(lines, i, parent, ctx);
      continue;
    }
    if (line.includes('|') && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      i = table(lines, i, parent, ctx);
      continue;
    }
    const para = [line.trim()];
    i++;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) para.push(lines[i++].trim());
    parent.append(h('p', {}, inline(para.join('\n'), ctx)));
  }
}

function list(lines, i, parent, ctx) {
  const first = ITEM.exec(lines[i]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const el = h(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) el.setAttribute('start', String(parseInt(first[2], 10)));
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [m[3]];
    i++;
    while (i < lines.length) {
      const l = lines[i];
      if (!l.trim()) {
        if (i + 1 < lines.length && /^\s/.test(lines[i + 1]) && lines[i + 1].trim()) { body.push(''); i++; continue; }
        break;
      }
      const sub = ITEM.exec(l);
      if (sub && sub[1].length <= indent) break;
      if (!sub && !/^\s/.test(l) && startsBlock(l, lines[i + 1])) break;
      body.push(l.replace(new RegExp(`^\\s{0,${indent + 4}}`), ''));
      i++;
    }
    const li = h('li');
    if (body.length === 1) li.append(inline(body[0], ctx));
    else blocks(body, li, ctx);
    el.append(li);
  }
  parent.append(el);
  return i;
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|')) s = s.slice(0, -1);
  return s.split('|').map((c) => c.trim());
}

function table(lines, i, parent, ctx) {
  const head = cells(lines[i]);
  i += 2;
  const rows = [];
  while (i < lines.length && lines[i].includes('|') && lines[i].trim()) rows.push(cells(lines[i++]));
  parent.append(h('div', { class: 'tablewrap' }, h('table', {},
    h('thead', {}, h('tr', {}, head.map((c) => h('th', {}, inline(c, ctx))))),
    h('tbody', {}, rows.map((r) => h('tr', {}, head.map((_, j) => h('td', {}, inline(r[j] || '', ctx)))))))));
  return i;
}

// Inline spans: code, images, links, autolinks, bold, italic, strike, citations, hard breaks.
const INLINE = new RegExp([
  '(`+)([\\s\\S]*?[^`])\\1(?!`)', // 1,2 code
  '(!?)\\[([^\\]]*)\\]\\(\\s*<?((?:[^()\\s<>]|\\([^()\\s]*\\))*)>?(?:\\s+"[^"]*")?\\s*\\)', // 3,4,5 image / link (one level of parentheses in the URL)
  '(\\*\\*|__)(?=\\S)([\\s\\S]*?\\S)\\6', // 6,7 bold
  '(\\*|_)(?=\\S)([\\s\\S]*?\\S)\\8(?![\\w*])', // 8,9 italic
  '~~(?=\\S)([\\s\\S]*?\\S)~~', // 10 strike
  `${CITE_OPEN}(\\d+)${CITE_CLOSE}`, // 11 citation
  '(https?:\\/\\/[^\\s<>()]+[^\\s<>().,;:!?\'"])', // 12 autolink
  '( {2,}|\\\\)\\n', // 13 hard break
].join('|'), 'g');

export function inline(text, ctx) {
  const out = [];
  let last = 0;
  // A regex of its own per call: spans nest (a link in bold), and a shared lastIndex would restart.
  const re = new RegExp(INLINE.source, 'g');
  let m;
  while ((m = re.exec(text))) {
    if (m.index > last) out.push(text.slice(last, m.index));
    last = re.lastIndex;
    if (m[1] !== undefined) out.push(h('code', {}, m[2].replace(/^ (.*) $/, '$1')));
    else if (m[4] !== undefined) out.push(m[3] ? image(m[4], m[5], ctx) : link(m[4], m[5], ctx));
    else if ((m[6] || m[8] || '').startsWith('_') && (/\w/.test(text[m.index - 1] || '') || /\w/.test(text[re.lastIndex] || ''))) {
      // Underscores touching a word (snake_case, obj.__dunder) are not emphasis: keep them, read on after them.
      const delimiter = m[6] || m[8];
      out.push(delimiter);
      last = re.lastIndex = m.index + delimiter.length;
    } else if (m[6] !== undefined) out.push(h('strong', {}, inline(m[7], ctx)));
    else if (m[8] !== undefined) {
      out.push(h('em', {}, inline(m[9], ctx)));
    } else if (m[10] !== undefined) out.push(h('del', {}, inline(m[10], ctx)));
    else if (m[11] !== undefined) out.push(ctx.cite ? ctx.cite(Number(m[11])) : '');
    else if (m[12] !== undefined) out.push(link(m[12], m[12], ctx));
    else if (m[13] !== undefined) out.push(h('br'));
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function link(label, href, ctx) {
  const target = String(href || '').trim();
  const sandbox = /^sandbox:/i.test(target) && ctx.sandbox ? ctx.sandbox(target) : null;
  if (sandbox) {
    return h('button', { type: 'button', class: 'link sandbox', title: `Download ${sandbox.filename || sandbox.fileId}`,
      onclick: () => ctx.download(sandbox.fileId, sandbox.filename) }, '↓ ', inline(label, ctx));
  }
  if (SAFE_HREF.test(target)) {
    return h('a', { href: target, target: '_blank', rel: 'noopener noreferrer nofollow' }, inline(label, ctx));
  }
  // javascript:, data:, relative and unknown targets: the words stay, the link goes.
  return h('span', { class: 'deadlink', title: 'link target not allowed' }, inline(label, ctx));
}

function image(alt, src, ctx) {
  const target = String(src || '').trim();
  const sandbox = /^sandbox:/i.test(target) && ctx.sandbox ? ctx.sandbox(target) : null;
  if (sandbox && ctx.image) return ctx.image(sandbox.fileId, alt);
  // Remote images would be third-party requests: show a link the user may choose to follow.
  if (SAFE_HREF.test(target)) return h('a', { href: target, target: '_blank', rel: 'noopener noreferrer nofollow' }, `[image] ${alt || target}`);
  return h('span', { class: 'deadlink' }, alt);
}
