"""The page a responder's task link opens (`/task#<token>`): one self-contained HTML document, no account, no
assets from anywhere. The token stays in the URL fragment, which browsers never send to a server or put in a
Referer, so it is not in any access log; the page posts it to `/api/v1/tasks/view` and `/api/v1/tasks/{action}`.

Text in Chinese (default) and English (`?lang=en`, or a browser that prefers English).
"""

from __future__ import annotations

# The page's own headers: nothing may be loaded from elsewhere, and the page is never cached or framed.
TASK_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

TASK_PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>SafeCity</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0; padding: 1rem; max-width: 36rem; color: #1b1f24; }
  h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem .8rem; }
  dt { color: #57606a; }
  dd { margin: 0; }
  button { font-size: 1.1rem; padding: .7rem 1.2rem; margin: .3rem .5rem .3rem 0; border-radius: .4rem;
           border: 1px solid #1f6feb; background: #1f6feb; color: #fff; }
  button:disabled { opacity: .5; }
  textarea { width: 100%; min-height: 5rem; font-size: 1rem; box-sizing: border-box; }
  #status { margin-top: 1rem; padding: .6rem; border-radius: .4rem; }
  .ok { background: #dafbe1; } .err { background: #ffebe9; }
</style>
</head>
<body>
<h1 id="title"></h1>
<dl id="facts"></dl>
<div id="actions"></div>
<div id="report" hidden>
  <label for="outcome" id="outcome-label"></label>
  <textarea id="outcome" maxlength="2000"></textarea>
</div>
<div id="status" role="status"></div>
<script>
"use strict";
const TEXT = {
  zh: {title: "处置任务", type: "类型", priority: "级别", stage: "状态", summary: "情况", address: "地址",
       expires: "链接有效期至", accept: "接单", arrive: "已到场", report: "提交处置结果",
       outcome: "处置结果", done: "已提交，谢谢。", missing: "链接不完整，请从消息中重新打开。",
       loading: "正在读取任务…"},
  en: {title: "Task", type: "Type", priority: "Priority", stage: "Stage", summary: "Situation", address: "Address",
       expires: "Link valid until", accept: "Accept", arrive: "I have arrived", report: "Report the outcome",
       outcome: "Outcome", done: "Sent, thank you.", missing: "The link is incomplete: open it again from the message.",
       loading: "Loading the task…"},
};
const params = new URLSearchParams(location.search);
const lang = params.get("lang") === "en" || (!params.get("lang") && !navigator.language.startsWith("zh")
  && navigator.language.startsWith("en")) ? "en" : "zh";
const t = TEXT[lang];
document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
const token = decodeURIComponent(location.hash.replace(/^#/, ""));
const el = (id) => document.getElementById(id);
el("title").textContent = t.title;
el("outcome-label").textContent = t.outcome;

function show(message, ok) {
  el("status").textContent = message;
  el("status").className = ok ? "ok" : "err";
}

function when(iso) {
  return new Date(iso).toLocaleString(lang === "en" ? "en-GB" : "zh-CN", {timeZone: "Asia/Shanghai"});
}

async function post(path, body) {
  const response = await fetch(path, {method: "POST", headers: {"content-type": "application/json",
    "accept-language": lang === "en" ? "en" : "zh-CN"}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || data.title || response.statusText);
  return data;
}

function render(task) {
  const facts = el("facts");
  facts.replaceChildren();
  for (const [key, value] of [["type", task.type], ["priority", task.priority], ["stage", task.stage],
                              ["summary", task.summary], ["address", task.address],
                              ["expires", when(task.expires_at)]]) {
    if (value === null || value === "") continue;
    const dt = document.createElement("dt"); dt.textContent = t[key];
    const dd = document.createElement("dd"); dd.textContent = String(value);
    facts.append(dt, dd);
  }
  const actions = el("actions");
  actions.replaceChildren();
  el("report").hidden = !task.actions.includes("report");
  for (const action of task.actions) {
    const button = document.createElement("button");
    button.type = "button";
    button.id = "do-" + action;
    button.textContent = t[action];
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const body = {token};
        if (action === "report") body.outcome = el("outcome").value;
        const incident = await post("/api/v1/tasks/" + action, body);
        show(t.done + " (" + t.stage + ": " + incident.stage + ")", true);
        render({...task, stage: incident.stage});
      } catch (error) {
        show(error.message, false);
        button.disabled = false;
      }
    });
    actions.append(button);
  }
}

if (!token) {
  show(t.missing, false);
} else {
  show(t.loading, true);
  post("/api/v1/tasks/view", {token}).then((task) => { el("status").textContent = ""; el("status").className = "";
    render(task); }, (error) => show(error.message, false));
}
</script>
</body>
</html>
"""
