// One message catalogue per language (messages/*.json); every UI string comes from here.
// zh-CN by default; the choice is remembered in localStorage. Times render in Asia/Shanghai unless changed.
import zh from "./messages/zh-CN.json";
import en from "./messages/en.json";

export const CATALOGUES = { "zh-CN": zh, en };
export const LANGUAGES = Object.keys(CATALOGUES);
const LANG_KEY = "safecity.lang";
const ZONE_KEY = "safecity.tz";
export const DEFAULT_ZONE = "Asia/Shanghai";

let lang = LANGUAGES.includes(localStorage.getItem(LANG_KEY)) ? localStorage.getItem(LANG_KEY) : "zh-CN";
const listeners = new Set();

export function language() {
  return lang;
}

export function timeZone() {
  return localStorage.getItem(ZONE_KEY) || DEFAULT_ZONE;
}

export function setLanguage(next) {
  if (!LANGUAGES.includes(next) || next === lang) return;
  lang = next;
  localStorage.setItem(LANG_KEY, next);
  document.documentElement.lang = next;
  for (const fn of listeners) fn(next);
}

export function onLanguage(fn) {
  listeners.add(fn);
}

// t("alerts.open_count", {n: 3}): the current language's message with {name} placeholders filled in.
export function t(key, params = {}) {
  const text = CATALOGUES[lang][key];
  if (text === undefined) {
    // A missing key is a bug (tests/unit/web/test_messages.py checks both catalogues); show the key, loudly.
    console.warn(`missing message ${lang}:${key}`);
    return key;
  }
  return text.replace(/\{(\w+)\}/g, (_, name) => (params[name] ?? `{${name}}`).toString());
}

// Text in both languages from the server ({zh, en} or name / name_en): the one of the current language.
export function pick(zhText, enText) {
  return lang === "en" ? enText || zhText || "" : zhText || enText || "";
}

export function formatTime(iso, withDate = false) {
  if (!iso) return "—";
  const options = { timeZone: timeZone(), hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
  if (withDate) Object.assign(options, { month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat(lang, options).format(new Date(iso));
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("unit.seconds", { n: s });
  const m = Math.floor(s / 60);
  const rest = s % 60;
  return rest ? t("unit.minutes_seconds", { m, s: rest }) : t("unit.minutes", { n: m });
}

// The same, compact (tables): "1m06s" in English, its catalogue form in Chinese.
export function formatDurationShort(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t("unit.seconds_short", { n: s });
  return t("unit.minutes_seconds_short", { m: Math.floor(s / 60), s: String(s % 60).padStart(2, "0") });
}

// Midnight today in the display zone, as an ISO instant (the KPI board's "today").
export function startOfToday() {
  const zone = timeZone();
  const now = new Date();
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-CA", {
      timeZone: zone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
    })
      .formatToParts(now)
      .map((p) => [p.type, p.value]),
  );
  const hour = Number(parts.hour) % 24;
  const elapsed = ((hour * 60 + Number(parts.minute)) * 60 + Number(parts.second)) * 1000 + now.getMilliseconds();
  return new Date(now.getTime() - elapsed).toISOString();
}
