// Syntax highlighting by one tokenizing regex per language family; tokens become spans of text.
import { h } from './dom.js';

const KEYWORDS = {
  python: 'and as assert async await break class continue def del elif else except False finally for from global if import in is lambda None nonlocal not or pass raise return True try while with yield print self',
  js: 'async await break case catch class const continue default delete do else export extends false finally for function if import in instanceof let new null of return static super switch this throw true try typeof undefined var void while yield',
  json: 'true false null',
  bash: 'if then else elif fi for in do done while case esac function return export local echo cd',
  sql: 'select from where and or not insert into values update set delete create table index join left right inner outer on group by order limit offset having as distinct null is in like between union all',
};
const ALIASES = { py: 'python', python3: 'python', javascript: 'js', ts: 'js', typescript: 'js', jsx: 'js', node: 'js', sh: 'bash', shell: 'bash', zsh: 'bash', console: 'bash' };

const TOKEN = /(#[^\n]*|\/\/[^\n]*|\/\*[\s\S]*?\*\/|--[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`(?:\\.|[^`\\])*`)|(\b\d[\d_]*(?:\.\d+)?(?:e[+-]?\d+)?\b)|([A-Za-z_][\w]*)/gi;

export function highlight(codeEl, text, lang) {
  const family = ALIASES[String(lang).toLowerCase()] || String(lang).toLowerCase();
  const words = KEYWORDS[family];
  if (!words) { codeEl.textContent = text; return; }
  const keywords = new Set(words.split(' ').map((w) => (family === 'sql' ? w.toLowerCase() : w)));
  let last = 0;
  TOKEN.lastIndex = 0;
  let m;
  while ((m = TOKEN.exec(text))) {
    let kind = null;
    if (m[1] !== undefined) {
      // Only the comment syntax of this language is a comment.
      const c = m[1];
      const ok = (c.startsWith('#') && (family === 'python' || family === 'bash'))
        || ((c.startsWith('//') || c.startsWith('/*')) && family === 'js')
        || (c.startsWith('--') && family === 'sql');
      if (!ok) { TOKEN.lastIndex = m.index + 1; continue; }
      kind = 'comment';
    } else if (m[2] !== undefined) kind = 'string';
    else if (m[3] !== undefined) kind = 'number';
    else if (m[4] !== undefined) kind = keywords.has(family === 'sql' ? m[4].toLowerCase() : m[4]) ? 'keyword' : null;
    if (!kind) continue;
    if (m.index > last) codeEl.append(text.slice(last, m.index));
    codeEl.append(h('span', { class: `tok-${kind}` }, m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) codeEl.append(text.slice(last));
}
