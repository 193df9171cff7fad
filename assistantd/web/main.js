// The console's shell: hash routes (#/playground[/thread], #/threads[/thread], #/storage/...), and the
// API key dialog. The key is stored in this browser only and sent only in Authorization headers.
import { auth, get } from './api.js';
import { playground } from './playground.js';
import { threads } from './threads.js';
import { storage } from './storage.js';

const main = document.getElementById('main');
let cleanup = () => {};

function route(event) {
  cleanup();
  cleanup = () => {};
  const [, page = 'playground', a, b] = (location.hash || '#/playground').split('/');
  for (const link of document.querySelectorAll('header nav a')) {
    if (link.dataset.page === page) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  const id = (s) => (s && /^[A-Za-z0-9_-]+$/.test(s) ? s : null);
  if (page === 'threads') { document.title = 'Threads · assistantd'; threads(main, id(a)); }
  else if (page === 'storage') { document.title = 'Storage · assistantd'; cleanup = storage(main, a === 'vector_stores' ? 'vector_stores' : 'files', id(b)) || cleanup; }
  else { document.title = 'Playground · assistantd'; playground(main, id(a)); }
  // After a navigation, keyboard focus moves to the new page (on first load it stays at the top).
  if (event) main.focus({ preventScroll: true });
}

const dialog = document.getElementById('key-dialog');
const keyInput = document.getElementById('key-input');
document.getElementById('key-button').addEventListener('click', () => { keyInput.value = auth.key; dialog.showModal(); });
document.getElementById('key-form').addEventListener('submit', (e) => {
  if (e.submitter && e.submitter.value === 'clear') auth.set('');
  else if (e.submitter && e.submitter.value === 'save') auth.set(keyInput.value.trim());
  else return;
  route(e);
});
window.addEventListener('auth-needed', () => {
  if (!dialog.open) { keyInput.value = ''; dialog.showModal(); }
});
document.getElementById('citation-close').addEventListener('click', () => document.getElementById('citation').close());

window.addEventListener('hashchange', route);
route();
get('/models').catch(() => {}); // a 401 here opens the key dialog on first visit
