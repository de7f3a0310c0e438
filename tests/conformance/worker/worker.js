// Exposes the CACHE and STATE bindings over HTTP for flask-ploy's conformance
// suite. POST {"steps": [[binding, method, ...args], ...]}: the steps run one
// after another; the answer is one {"ok": result} or {"error": message} per
// step. A Map (State.get of a list) comes back as [[key, value], ...].
// ["STATE", "__reset__"] deletes every key of STATE, through the binding.
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
