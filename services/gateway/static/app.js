// The petition page: the list of open petitions with their counts, and one
// petition with its live counter and the sign button. No framework: the page
// is small, and every text it shows from the API goes through textContent.
"use strict";

(() => {
  const LANGUAGES = ["fr", "en"];
  const LIST_REFRESH_MS = 10000;
  const LIVE_RECONNECT_MS = 5000;

  const state = {
    lang: "fr",
    messages: {},
    session: { signed_in: false },
    petitionId: null,
    petition: null,
    tally: null,
    live: null,
    listTimer: null,
    verificationId: null,
  };

  const byId = (id) => document.getElementById(id);

  // Text

  function t(key, values = {}) {
    let text = state.messages[key];
    if (text === undefined) {
      return key;
    }
    for (const [name, value] of Object.entries(values)) {
      text = text.split(`{${name}}`).join(String(value));
    }
    return text;
  }

  // Shows a translated text and remembers which, so that switching the
  // language translates what is already on the page too.
  function say(element, key, values = {}) {
    element.dataset.say = key;
    element.dataset.sayValues = JSON.stringify(values);
    element.textContent = t(key, values);
  }

  function plural(key, count) {
    const form = new Intl.PluralRules(state.lang).select(Number(count || 0));
    return `${key}_${form === "one" ? "one" : "other"}`;
  }

  function number(value) {
    return new Intl.NumberFormat(state.lang === "fr" ? "fr-FR" : "en-GB").format(Number(value || 0));
  }

  function chooseLanguage() {
    const saved = window.localStorage.getItem("lang");
    if (LANGUAGES.includes(saved)) {
      return saved;
    }
    const preferred = (navigator.languages || [navigator.language || "fr"]).map((l) => l.slice(0, 2));
    return preferred.find((l) => LANGUAGES.includes(l)) || "fr";
  }

  async function setLanguage(lang) {
    const response = await fetch(`/static/i18n/${lang}.json`, { headers: { Accept: "application/json" } });
    state.messages = await response.json();
    state.lang = lang;
    document.documentElement.lang = lang;
    window.localStorage.setItem("lang", lang);
    for (const element of document.querySelectorAll("[data-i18n]")) {
      element.textContent = t(element.dataset.i18n);
    }
    for (const element of document.querySelectorAll("[data-say]")) {
      element.textContent = t(element.dataset.say, JSON.parse(element.dataset.sayValues || "{}"));
    }
    for (const count of document.querySelectorAll(".list-count[data-total]")) {
      renderListCount(count, count.dataset.total);
    }
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
    }
    renderSession();
    if (state.petition) {
      renderPetition();
    }
    if (state.tally) {
      renderTally(state.tally);
    }
  }

  // API

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    let response;
    try {
      response = await fetch(path, { credentials: "same-origin", ...options, headers });
    } catch (failure) {
      return { ok: false, status: 0, body: null };
    }
    let body = null;
    try {
      body = await response.json();
    } catch (notJson) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body };
  }

  // The words for a failed answer: by its stable reason when the page has
  // words for it, else the server's message.
  function sayError(element, answer) {
    const error = answer.body && answer.body.error;
    if (!error) {
      say(element, "error_network");
      return;
    }
    const key = `error_${error.reason}`;
    const values = { message: error.message, seconds: Math.ceil(error.retry_after_seconds || 1) };
    say(element, key in state.messages ? key : "error_generic", values);
  }

  function randomKey() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // Session

  async function loadSession() {
    const answer = await api("/api/v1/session");
    state.session = answer.ok && answer.body ? answer.body : { signed_in: false };
    renderSession();
  }

  function renderSession() {
    const session = state.session;
    const status = byId("session-status");
    if (session.signed_in) {
      const method = session.method === "VERIFICATION_METHOD_EMAIL" ? t("method_email") : t("method_oidc");
      status.textContent = t("signed_in_as", { method, country: session.country, territory: session.territory });
    } else {
      status.textContent = "";
    }
    byId("sign-out").hidden = !session.signed_in;
    byId("signed-in-actions").hidden = !session.signed_in;
    byId("signed-out-actions").hidden = session.signed_in;
  }

  async function signOut() {
    await api("/api/v1/session", { method: "DELETE" });
    await loadSession();
  }

  function showSignInError() {
    const params = new URLSearchParams(window.location.search);
    const reason = params.get("signin_error");
    if (!reason) {
      return;
    }
    const key = `signin_error_${reason}`;
    say(byId("notice"), key in state.messages ? key : "signin_error_generic", { reason });
    params.delete("signin_error");
    const query = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : ""));
  }

  // The list of open petitions

  async function showList() {
    byId("list-view").hidden = false;
    const answer = await api("/api/v1/petitions?state=PETITION_STATE_OPEN");
    byId("list-loading").hidden = true;
    if (!answer.ok) {
      sayError(byId("notice"), answer);
      return;
    }
    const petitions = answer.body.petitions || [];
    byId("list-empty").hidden = petitions.length > 0;
    const list = byId("petition-list");
    list.replaceChildren();
    for (const petition of petitions) {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = `/petitions/${encodeURIComponent(petition.id)}`;
      link.textContent = petition.title;
      const count = document.createElement("span");
      count.className = "list-count";
      count.dataset.petition = petition.id;
      item.append(link, " ", count);
      list.append(item);
    }
    await refreshListCounts();
    state.listTimer = window.setInterval(refreshListCounts, LIST_REFRESH_MS);
  }

  // The list polls the cacheable tally endpoint: a CDN answers most of it,
  // where one live stream per petition would hold a connection each.
  async function refreshListCounts() {
    for (const count of document.querySelectorAll(".list-count")) {
      const answer = await api(`/api/v1/petitions/${encodeURIComponent(count.dataset.petition)}/tally`);
      if (answer.ok) {
        renderListCount(count, answer.body.total);
      }
    }
  }

  function renderListCount(count, total) {
    count.dataset.total = String(total);
    count.textContent = t(plural("count_in_list", total), { count: number(total) });
  }

  // One petition

  async function showPetition(petitionId) {
    state.petitionId = petitionId;
    const answer = await api(`/api/v1/petitions/${encodeURIComponent(petitionId)}`);
    if (!answer.ok) {
      byId("missing-view").hidden = false;
      sayError(byId("notice"), answer);
      return;
    }
    state.petition = answer.body;
    byId("petition-view").hidden = false;
    const here = `/petitions/${encodeURIComponent(petitionId)}`;
    byId("sign-in-oidc").href = `/auth/oidc/start?return_to=${encodeURIComponent(here)}`;
    byId("open-data-json").href = `/api/v1/petitions/${encodeURIComponent(petitionId)}/open-data.json`;
    byId("open-data-csv").href = `/api/v1/petitions/${encodeURIComponent(petitionId)}/open-data.csv`;
    renderPetition();
    watchTally();
  }

  function renderPetition() {
    const petition = state.petition;
    document.title = `${petition.title} — ${t("site_name")}`;
    byId("petition-title").textContent = petition.title;
    byId("petition-state").textContent = t(`state_${petition.state}`);
    const text = byId("petition-text");
    text.replaceChildren();
    for (const paragraph of (petition.text || "").split(/\n{2,}/)) {
      if (paragraph.trim()) {
        const p = document.createElement("p");
        p.textContent = paragraph;
        text.append(p);
      }
    }
  }

  function renderTally(tally) {
    state.tally = tally;
    const count = byId("count");
    count.textContent = number(tally.total);
    count.dataset.total = String(tally.total);
    byId("count-word").textContent = t(plural("signatures_word", tally.total));
    renderThresholds(tally);
    renderCounts(byId("territory-table"), tally.by_territory || {});
    renderCounts(byId("country-table"), tally.by_country || {});
  }

  function renderThresholds(tally) {
    const list = byId("thresholds");
    list.replaceChildren();
    const reached = new Set((tally.thresholds_reached || []).map((r) => r.threshold_id));
    for (const threshold of (state.petition && state.petition.thresholds) || []) {
      const item = document.createElement("li");
      const label = document.createElement("p");
      label.id = `threshold-${threshold.id}`;
      label.textContent = threshold.label || threshold.id;
      const target = Number(threshold.signatures);
      const progress = document.createElement("progress");
      progress.max = target;
      progress.value = Math.min(Number(tally.total), target);
      progress.setAttribute("aria-labelledby", label.id);
      const detail = document.createElement("p");
      detail.className = "muted";
      let words = t("threshold_progress", { count: number(tally.total), target: number(target) });
      if (threshold.min_territories) {
        words += ` ${t("threshold_territories", { territories: threshold.min_territories })}`;
      }
      if (reached.has(threshold.id)) {
        words += ` — ${t("threshold_reached")}`;
      }
      detail.textContent = words;
      item.append(label, progress, detail);
      list.append(item);
    }
  }

  function renderCounts(table, counts) {
    const body = table.querySelector("tbody");
    body.replaceChildren();
    const rows = Object.entries(counts).sort((a, b) => Number(b[1]) - Number(a[1]) || a[0].localeCompare(b[0]));
    for (const [code, signatures] of rows) {
      const row = document.createElement("tr");
      const name = document.createElement("td");
      name.textContent = code;
      const value = document.createElement("td");
      value.className = "number";
      value.textContent = number(signatures);
      row.append(name, value);
      body.append(row);
    }
  }

  // The live counter: Server-Sent Events. EventSource reconnects by itself
  // when a stream ends; when it is refused (an error answer) it gives up, so
  // this waits a little and opens a new one.
  function watchTally() {
    if (state.live) {
      state.live.close();
    }
    const source = new EventSource(`/api/v1/petitions/${encodeURIComponent(state.petitionId)}/tally/live`);
    state.live = source;
    source.addEventListener("tally", (event) => {
      renderTally(JSON.parse(event.data));
      say(byId("live-state"), "live_on");
    });
    source.addEventListener("paused", () => {
      say(byId("live-state"), "live_paused");
    });
    source.addEventListener("ended", () => {
      source.close();
      say(byId("live-state"), "live_ended");
    });
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED && state.live === source) {
        say(byId("live-state"), "live_paused");
        window.setTimeout(watchTally, LIVE_RECONNECT_MS);
      }
    };
  }

  async function sign() {
    const button = byId("sign-button");
    const result = byId("sign-result");
    button.disabled = true;
    result.dataset.outcome = "pending";
    say(result, "signing");
    const answer = await api(`/api/v1/petitions/${encodeURIComponent(state.petitionId)}/signatures`, {
      method: "POST",
      headers: { "Idempotency-Key": randomKey() },
    });
    button.disabled = false;
    if (answer.ok && answer.body.outcome === "OUTCOME_ACCEPTED") {
      result.dataset.outcome = "accepted";
      say(result, "signed");
    } else if (answer.ok && answer.body.outcome === "OUTCOME_ALREADY_SIGNED") {
      result.dataset.outcome = "already_signed";
      say(result, "already_signed");
    } else {
      result.dataset.outcome = "error";
      sayError(result, answer);
      if (answer.status === 401) {
        await loadSession();
      }
    }
  }

  // Email code

  async function sendCode(event) {
    event.preventDefault();
    const result = byId("email-result");
    const answer = await api("/api/v1/auth/email/start", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        email: byId("email").value.trim(),
        country: byId("email-country").value.trim().toUpperCase(),
        territory: byId("email-territory").value.trim(),
      }),
    });
    if (!answer.ok) {
      sayError(result, answer);
      return;
    }
    state.verificationId = answer.body.verification_id;
    byId("code-form").hidden = false;
    say(result, "code_sent");
    byId("code").focus();
  }

  async function checkCode(event) {
    event.preventDefault();
    const result = byId("email-result");
    const answer = await api("/api/v1/auth/email/complete", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ verification_id: state.verificationId, code: byId("code").value.trim() }),
    });
    if (!answer.ok) {
      sayError(result, answer);
      return;
    }
    delete result.dataset.say;
    result.textContent = "";
    state.session = answer.body;
    renderSession();
    byId("sign-button").focus();
  }

  async function start() {
    await setLanguage(chooseLanguage());
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.addEventListener("click", () => setLanguage(button.dataset.lang));
    }
    byId("sign-out").addEventListener("click", signOut);
    byId("sign-button").addEventListener("click", sign);
    byId("email-form").addEventListener("submit", sendCode);
    byId("code-form").addEventListener("submit", checkCode);
    showSignInError();
    await loadSession();
    const path = window.location.pathname;
    const match = path.match(/^\/petitions\/([^/]+)$/);
    if (path === "/") {
      await showList();
    } else if (match) {
      await showPetition(decodeURIComponent(match[1]));
    } else {
      byId("missing-view").hidden = false;
    }
    document.body.dataset.ready = "true";
  }

  start();
})();
