// tokengate console: the little the pages need beyond HTML forms. No library; served from
// the binary ('self' under the CSP). Every fetch carries the session's CSRF token.
const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

// Restriction lines, checked by the server (the filter's own parser) as they are typed.
for (const ta of document.querySelectorAll("textarea[data-check]")) {
  const box = document.getElementById(ta.id + "-error");
  let timer = 0;
  let seq = 0;
  const check = async () => {
    const mine = ++seq;
    let out;
    try {
      const r = await fetch(ta.dataset.check, {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": csrf },
        body: JSON.stringify({ limit_to: ta.value }),
        credentials: "same-origin",
      });
      out = await r.json();
    } catch {
      return;
    }
    if (mine !== seq || !box) return;
    box.replaceChildren();
    const field = ta.closest(".field");
    if (out.ok) {
      ta.removeAttribute("aria-invalid");
      field?.classList.remove("invalid");
      if (out.lines) {
        const p = document.createElement("p");
        p.className = "ok-text";
        p.textContent = `${out.lines} line${out.lines === 1 ? "" : "s"}, all valid.`;
        box.append(p);
      }
      return;
    }
    ta.setAttribute("aria-invalid", "true");
    field?.classList.add("invalid");
    const p = document.createElement("p");
    p.className = "error-text";
    const pos = out.line ? `Line ${out.line}${out.column ? `, column ${out.column}` : ""}: ` : "";
    p.textContent = pos + out.error;
    box.append(p);
    if (out.text != null && out.column) {
      const pre = document.createElement("pre");
      pre.className = "excerpt";
      const n = Math.min([...out.text].length, out.column - 1);
      pre.textContent = out.text + "\n" + " ".repeat(Math.max(0, n)) + "^";
      box.append(pre);
    }
  };
  ta.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 250);
  });
}

// Copy buttons: data-copy names the element whose value or text is copied.
for (const b of document.querySelectorAll("button[data-copy]")) {
  b.addEventListener("click", async () => {
    const el = document.getElementById(b.dataset.copy);
    if (!el) return;
    const text = "value" in el && el.tagName === "INPUT" ? el.value : el.textContent;
    const status = document.getElementById("copy-status");
    try {
      await navigator.clipboard.writeText(text);
      if (status) status.textContent = "Copied to the clipboard.";
    } catch {
      if (el.tagName === "INPUT") el.select();
      if (status) status.textContent = "Select the text and copy it (Ctrl+C).";
    }
  });
}

// Snippets follow the URL field (same output as the core's snippet module).
const urlInput = document.getElementById("snippet-url");
const secretInput = document.getElementById("secret");
if (urlInput && secretInput) {
  const shq = (s) => (s !== "" && /^[A-Za-z0-9\-_./:@%+=,]+$/.test(s) ? s : "'" + s.replaceAll("'", "'\\''") + "'");
  const js = (s) => JSON.stringify(s);
  const render = () => {
    const url = urlInput.value.trim();
    const t = secretInput.value;
    const hasUser = urlInput.dataset.hasUser === "1";
    const user = hasUser ? urlInput.dataset.user : "USERNAME";
    const out = {
      curl_basic: `curl -sS -u ${shq(user + ":" + t)} ${shq(url)}`,
      curl_bearer: `curl -sS -H ${shq("Authorization: Bearer " + t)} ${shq(url)}`,
    };
    let auth;
    if (hasUser) auth = js("Bearer " + t);
    else if (/^[\x00-\x7f]*$/.test(user)) auth = `"Basic " + btoa(${js(user)} + ":" + ${js(t)})`;
    else auth = `"Basic " + btoa(String.fromCharCode(...new TextEncoder().encode(${js(user)} + ":" + ${js(t)})))`;
    out.javascript = `const response = await fetch(${js(url)}, {\n  headers: { Authorization: ${auth}, Accept: "application/json" },\n});\nconsole.log(response.status, await response.json());`;
    for (const [k, v] of Object.entries(out)) {
      const pre = document.getElementById("snippet-" + k);
      if (pre) pre.textContent = v;
    }
  };
  urlInput.addEventListener("input", render);
}
