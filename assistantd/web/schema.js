// Validation of function tool definitions: the name the API accepts, and a JSON Schema that is an
// object schema whose keywords have the right shapes (what models and the API need to call it).

const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null']);
const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

export function validateFunction(text) {
  let def;
  try { def = JSON.parse(text); } catch (e) { return { errors: [`Not valid JSON: ${e.message}`] }; }
  const errors = [];
  if (!def || typeof def !== 'object' || Array.isArray(def)) return { errors: ['The definition must be a JSON object.'] };
  if (typeof def.name !== 'string' || !NAME.test(def.name)) errors.push('"name" must be 1-64 letters, digits, "_" or "-".');
  if (def.description !== undefined && typeof def.description !== 'string') errors.push('"description" must be a string.');
  if (def.strict !== undefined && typeof def.strict !== 'boolean') errors.push('"strict" must be true or false.');
  for (const key of Object.keys(def)) {
    if (!['name', 'description', 'parameters', 'strict'].includes(key)) errors.push(`Unknown field "${key}" (allowed: name, description, parameters, strict).`);
  }
  if (def.parameters !== undefined) {
    if (!def.parameters || typeof def.parameters !== 'object' || Array.isArray(def.parameters)) errors.push('"parameters" must be a JSON Schema object.');
    else {
      if (def.parameters.type !== 'object') errors.push('parameters: the top-level "type" must be "object".');
      schemaErrors(def.parameters, 'parameters', errors, 0);
    }
  }
  return { errors, value: errors.length ? undefined : def };
}

function schemaErrors(s, path, errors, depth) {
  if (depth > 20) { errors.push(`${path}: nested too deeply.`); return; }
  if (typeof s === 'boolean') return;
  if (!s || typeof s !== 'object' || Array.isArray(s)) { errors.push(`${path}: a schema must be an object.`); return; }
  if (s.type !== undefined) {
    const types = Array.isArray(s.type) ? s.type : [s.type];
    for (const t of types) if (!TYPES.has(t)) errors.push(`${path}.type: "${t}" is not a JSON Schema type.`);
  }
  if (s.properties !== undefined) {
    if (!s.properties || typeof s.properties !== 'object' || Array.isArray(s.properties)) errors.push(`${path}.properties must be an object.`);
    else for (const [k, v] of Object.entries(s.properties)) schemaErrors(v, `${path}.properties.${k}`, errors, depth + 1);
  }
  if (s.required !== undefined) {
    if (!Array.isArray(s.required) || s.required.some((r) => typeof r !== 'string')) errors.push(`${path}.required must be an array of strings.`);
    else if (s.properties && typeof s.properties === 'object') {
      for (const r of s.required) if (!(r in s.properties)) errors.push(`${path}.required names "${r}", which is not in properties.`);
    }
  }
  if (s.items !== undefined) schemaErrors(s.items, `${path}.items`, errors, depth + 1);
  if (s.additionalProperties !== undefined && typeof s.additionalProperties !== 'boolean') schemaErrors(s.additionalProperties, `${path}.additionalProperties`, errors, depth + 1);
  if (s.enum !== undefined && (!Array.isArray(s.enum) || !s.enum.length)) errors.push(`${path}.enum must be a non-empty array.`);
  for (const k of ['anyOf', 'oneOf', 'allOf']) {
    if (s[k] === undefined) continue;
    if (!Array.isArray(s[k]) || !s[k].length) errors.push(`${path}.${k} must be a non-empty array of schemas.`);
    else s[k].forEach((sub, i) => schemaErrors(sub, `${path}.${k}[${i}]`, errors, depth + 1));
  }
  if (s.description !== undefined && typeof s.description !== 'string') errors.push(`${path}.description must be a string.`);
  for (const k of ['minimum', 'maximum', 'minLength', 'maxLength', 'minItems', 'maxItems']) {
    if (s[k] !== undefined && typeof s[k] !== 'number') errors.push(`${path}.${k} must be a number.`);
  }
}

export const EXAMPLE_FUNCTION = {
  name: 'get_weather',
  description: 'Get the current weather in a city',
  parameters: {
    type: 'object',
    properties: {
      city: { type: 'string', description: 'The city, e.g. Paris' },
      unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
    },
    required: ['city'],
  },
};
