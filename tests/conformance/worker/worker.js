// Exposes the CACHE and STATE bindings over HTTP for flask-ploy's conformance
// suite. POST {"steps": [[binding, method, ...args], ...]}: the steps run one
// after another; the answer is one {"ok": result} or {"error": message} per
// step. A Map (State.get of a list) comes back as [[key, value], ...].
// Two helpers go through the binding's own methods:
// ["STATE", "__reset__"] deletes every key; ["STATE", "__pages__", options]
// lists page after page, passing each page's cursor to the next call, and
// returns [{keys: [name, ...], cursor}, ...].
export default {
  async fetch(request, env) {
    if (request.method !== "POST") {
      return new Response("conformance worker");
    }
    const { steps } = await request.json();
    const results = [];
    for (const [binding, method, ...args] of steps) {
      try {
        let value;
        if (method === "__reset__") {
          value = await reset(env[binding]);
        } else if (method === "__pages__") {
          value = await pages(env[binding], args[0]);
        } else {
          value = await env[binding][method](...args);
        }
        if (value instanceof Map) {
          value = [...value.entries()];
        }
        results.push({ ok: value === undefined ? null : value });
      } catch (err) {
        results.push({ error: String((err && err.message) || err) });
      }
    }
    return Response.json(results);
  },
};

async function reset(state) {
  let deleted = 0;
  for (;;) {
    const page = await state.list({});
    for (const key of page.keys) {
      await state.delete(key.name);
      deleted += 1;
    }
    if (page.list_complete) {
      return deleted;
    }
  }
}

async function pages(state, options) {
  const out = [];
  let cursor;
  while (out.length < 1000) {
    const page = await state.list(cursor === undefined ? options : { ...options, cursor });
    out.push({ keys: page.keys.map((k) => k.name), cursor: page.cursor ?? null });
    if (page.list_complete) {
      return out;
    }
    cursor = page.cursor;
  }
  throw new Error("more than 1000 pages");
}
