// The console is a plain client of the public /v1 API. The key lives in localStorage, goes only into
// the Authorization header of same-origin requests, and is never put in a URL or logged.

const KEY = 'assistantd.apiKey';

export const auth = {
  get key() { return localStorage.getItem(KEY) || ''; },
  set(key) { if (key) localStorage.setItem(KEY, key); else localStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error;
    super(err && err.message ? err.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function headers(extra) {
  const out = { 'OpenAI-Beta': 'assistants=v2', ...extra };
  if (auth.key) out.Authorization = `Bearer ${auth.key}`;
  return out;
}

export function url(path, query) {
  const params = new URLSearchParams();
  const entries = Array.isArray(query) ? query : Object.entries(query || {});
  for (const [k, v] of entries) if (v !== undefined && v !== null && v !== '') params.append(k, v);
  const qs = params.toString();
  return '/v1' + path + (qs ? '?' + qs : '');
}

async function failed(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch { body = { error: { message: text || response.statusText } }; }
  if (response.status === 401) window.dispatchEvent(new CustomEvent('auth-needed'));
  return new ApiError(response.status, body);
}

export async function api(method, path, body, { query, signal } = {}) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(url(path, query), init);
  if (!response.ok) throw await failed(response);
  return response.json();
}

export const get = (path, query, opts) => api('GET', path, undefined, { ...opts, query });
export const post = (path, body, opts) => api('POST', path, body ?? {}, opts);
export const del = (path) => api('DELETE', path);

// POST a run-creating request with stream:true and yield its server-sent events ({event, data}).
export async function* stream(path, body, { query, signal } = {}) {
  const response = await fetch(url(path, query), {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json', Accept: 'text/event-stream' }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await failed(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let event = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === '') {
        if (data.length) {
          const raw = data.join('\n');
          let parsed = raw;
          if (!raw.startsWith('[DONE]')) { try { parsed = JSON.parse(raw); } catch { parsed = raw; } }
          yield { event: event || 'message', data: parsed };
        }
        event = '';
        data = [];
      } else if (!line.startsWith(':')) {
        const i = line.indexOf(':');
        const name = i < 0 ? line : line.slice(0, i);
        let val = i < 0 ? '' : line.slice(i + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (name === 'event') event = val;
        else if (name === 'data') data.push(val);
      }
    }
  }
}

// Upload one file with progress (fetch cannot report upload progress; XMLHttpRequest can).
export function upload(file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/files');
    if (auth.key) xhr.setRequestHeader('Authorization', `Bearer ${auth.key}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = { error: { message: xhr.responseText } }; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: 'The upload failed: the server did not answer.' } }));
    const form = new FormData();
    form.append('purpose', purpose);
    form.append('file', file, file.name);
    xhr.send(form);
  });
}

// A file's bytes as a blob: URL (images and downloads need the key, which an <img src> cannot send).
const blobs = new Map();
export async function fileBlobUrl(fileId) {
  if (!blobs.has(fileId)) {
    const p = fetch(url(`/files/${encodeURIComponent(fileId)}/content`), { headers: headers({}) }).then(async (r) => {
      if (!r.ok) throw await failed(r);
      return URL.createObjectURL(await r.blob());
    });
    blobs.set(fileId, p);
    p.catch(() => blobs.delete(fileId));
  }
  return blobs.get(fileId);
}

export async function download(fileId, filename) {
  const href = await fileBlobUrl(fileId);
  let name = filename;
  if (!name) {
    try { name = (await get(`/files/${encodeURIComponent(fileId)}`)).filename; } catch { name = fileId; }
  }
  const a = document.createElement('a');
  a.href = href;
  a.download = String(name).split('/').pop() || fileId;
  document.body.append(a);
  a.click();
  a.remove();
}

// Every page of a list (bounded), for small pickers such as the file list in the assistant editor.
export async function listAll(path, query = {}, max = 500) {
  const out = [];
  let after;
  for (;;) {
    const page = await get(path, { limit: 100, ...query, after });
    out.push(...page.data);
    if (!page.has_more || !page.data.length || out.length >= max) return out;
    after = page.data[page.data.length - 1].id;
  }
}
