// The labelling page's keys, its draft and its lease. The form works without this script; with it:
// - keys rate the current step and move through the steps, submit, skip, save (the list is on the page, "?" shows it);
//   the rating keys say their rating (- 0 +, and a s d for one hand) and come from the form (data-rating-keys); no
//   digit but 0 rates; Enter submits from anywhere but inside a note (a focused note or instructions toggle included);
// - skipping saves the draft first (the server keeps it, and the rollout comes back after the rest of the queue);
// - on a revision of the person's own label (data-revising) nothing is saved as a draft: the submit stores it;
// - the draft is saved on the server a moment after each change, every minute while the person is active, and when
//   the page is hidden or left, so it survives closing the tab and opening the rollout in another browser; each save
//   renews the person's lease, and its answer says whether they still hold it;
// - in stop-at-first-error mode the steps after the first -1 are greyed out and take no rating.
// Saves are sent urlencoded, as the form itself posts (the server reads that encoding with a bound that fits the
// longest rollout's two fields per step), and without the empty ratings and notes, so they stay small.
"use strict";

(() => {
  const form = document.getElementById("label-form");
  if (!form) {
    return;
  }
  const skipForm = document.getElementById("skip-form");
  // The form's address (form.action would be the control named "action").
  const saveUrl = form.getAttribute("action");
  const steps = Array.from(form.querySelectorAll("li.step"));
  const stopAtFirstError = form.dataset.stopAtFirstError === "true";
  const secondsBefore = parseFloat(form.dataset.secondsBefore || "0") || 0;
  const visitInput = form.elements.namedItem("visit");
  const saveStatus = document.getElementById("save-status");
  const leaseStatus = document.getElementById("lease-status");
  const timer = document.getElementById("timer");
  const keysHelp = document.getElementById("keys-help");
  const finishPanel = document.getElementById("finish-panel");
  const badProblem = form.elements.namedItem("bad_problem");
  const keyHint = document.getElementById("key-hint");
  const revising = form.dataset.revising === "true";
  const RATING_KEYS = JSON.parse(form.dataset.ratingKeys || "{}");
  const SAVE_DELAY_MS = 1500;
  const SAVE_EVERY_MS = 60000;

  let current = 0;
  let dirty = false;
  let active = false;
  let submitting = false;
  let savedWhileHidden = false;
  let saveTimer = null;
  let skipping = false;
  const shownAt = Date.now();
  let hiddenMs = 0;
  let hiddenSince = document.hidden ? Date.now() : null;

  const ratingOf = (step) => {
    const checked = step.querySelector("input[type=radio]:checked");
    return checked ? checked.value : "";
  };

  function setCurrent(index, scroll = true) {
    if (!steps.length) {
      return;
    }
    current = Math.max(0, Math.min(steps.length - 1, index));
    steps.forEach((step, i) => {
      step.classList.toggle("current", i === current);
      if (i === current) {
        step.setAttribute("aria-current", "step");
      } else {
        step.removeAttribute("aria-current");
      }
    });
    if (scroll) {
      steps[current].scrollIntoView({ block: "nearest" });
    }
  }

  // Stop-at-first-error: the steps after the first -1 take no rating (the server drops them too).
  function applyStopRule() {
    if (!stopAtFirstError) {
      return;
    }
    let ended = false;
    for (const step of steps) {
      step.classList.toggle("after-error", ended);
      for (const radio of step.querySelectorAll("input[type=radio]")) {
        radio.disabled = ended;
      }
      if (!ended && ratingOf(step) === "-1") {
        ended = true;
      }
    }
  }

  function changed() {
    dirty = true;
    clearTimeout(saveTimer);
    saveTimer = setTimeout(() => save(), SAVE_DELAY_MS);
  }

  function rate(value) {
    const step = steps[current];
    if (!step || step.classList.contains("after-error")) {
      return;
    }
    const radio = step.querySelector(`input[type=radio][value="${value}"]`);
    if (!radio) {
      return;
    }
    radio.checked = true;
    applyStopRule();
    changed();
    if (stopAtFirstError && value === "-1") {
      finishPanel.scrollIntoView({ block: "nearest" });
      return;
    }
    if (value !== "" && current < steps.length - 1) {
      setCurrent(current + 1);
    }
  }

  function cycleFinishReason() {
    const radios = Array.from(form.querySelectorAll("input[name=finish_reason]"));
    const index = radios.findIndex((radio) => radio.checked);
    radios[(index + 1) % radios.length].checked = true;
    changed();
  }

  function submitWith(action) {
    const button = form.querySelector(`button[name=action][value="${action}"]`);
    if (button) {
      form.requestSubmit(button);
    }
  }

  function skip() {
    if (skipForm) {
      skipForm.requestSubmit();
    }
  }

  // Skipping keeps the draft: save what is on the page first (its time too), then post the skip form.
  function skipAfterSave(event) {
    if (skipping) {
      return; // the skip form's own submit, after the save
    }
    event.preventDefault();
    skipping = true;
    submitting = true;
    clearTimeout(saveTimer);
    save({ force: true }).finally(() => skipForm.submit());
  }

  // The form's fields for a save: what the form posts, less the empty ratings and notes (the server reads a missing
  // one as empty), urlencoded.
  function saveBody() {
    const body = new URLSearchParams();
    for (const [name, value] of new FormData(form)) {
      if (value === "" && /^(rating|note)_\d+$/.test(name)) {
        continue;
      }
      body.append(name, value);
    }
    return body;
  }

  function timeText(iso) {
    return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function showLease(expiresAt) {
    if (!leaseStatus) {
      return;
    }
    form.dataset.leaseExpiresAt = expiresAt || "";
    if (expiresAt) {
      leaseStatus.className = "ok";
      leaseStatus.textContent = `Checked out to you until ${timeText(expiresAt)}; saving renews it.`;
    } else {
      leaseStatus.className = "warning";
      leaseStatus.textContent =
        "Your lease has ended: your draft is kept, and submitting still works unless someone else has taken this " +
        "rollout's place.";
    }
  }

  function showHint(kind) {
    if (!keyHint) {
      return;
    }
    const text = kind ? keyHint.dataset[kind] || "" : "";
    keyHint.textContent = text;
    keyHint.hidden = !text;
  }

  async function save({ keepalive = false, resume = false, force = false } = {}) {
    if (revising || (submitting && !force)) {
      return;
    }
    clearTimeout(saveTimer);
    const body = saveBody();
    body.set("action", "save");
    if (resume) {
      body.set("resume", "on");
    }
    dirty = false;
    active = false;
    try {
      const response = await fetch(saveUrl, {
        method: "POST",
        body,
        keepalive,
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (keepalive) {
        return;
      }
      const answer = await response.json();
      if (!response.ok) {
        dirty = true;
        saveStatus.textContent = `Draft not saved: ${(answer.errors || []).join("; ") || response.status}`;
        return;
      }
      if (answer.labelled) {
        saveStatus.textContent = "You have labelled this rollout already.";
        return;
      }
      if (answer.visit) {
        visitInput.value = answer.visit;
      }
      showLease(answer.lease_expires_at);
      saveStatus.textContent = `Draft saved at ${timeText(new Date().toISOString())}.`;
    } catch (error) {
      dirty = true;
      if (!keepalive) {
        saveStatus.textContent = "Draft not saved: the server did not answer; it is tried again.";
      }
    }
  }

  function isTyping(target) {
    if (target instanceof HTMLTextAreaElement || target.isContentEditable) {
      return true;
    }
    return target instanceof HTMLInputElement && !["radio", "checkbox", "button", "submit"].includes(target.type);
  }

  document.addEventListener("keydown", (event) => {
    active = true;
    const target = event.target;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submitWith("submit");
      return;
    }
    if (isTyping(target)) {
      if (event.key === "Escape") {
        target.blur();
        showHint(null);
        setCurrent(current);
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const activates = target instanceof HTMLButtonElement || target instanceof HTMLAnchorElement;
    if (activates && (event.key === "Enter" || event.key === " ")) {
      return; // the focused button or link does what it says
    }
    if (target.tagName === "SUMMARY" && event.key === " ") {
      return; // Space opens and closes the instructions or a note; Enter submits, as everywhere but in a note
    }
    const key = event.key;
    let handled = true;
    showHint(null);
    if (Object.hasOwn(RATING_KEYS, key)) {
      rate(RATING_KEYS[key]);
    } else if (/^[1-9]$/.test(key)) {
      showHint("digit"); // a digit once rated (1 was -1): say which keys do
    } else if (key === "Backspace" || key === "Delete") {
      rate("");
    } else if (key === "j" || key === "ArrowDown") {
      setCurrent(current + 1);
    } else if (key === "k" || key === "ArrowUp") {
      setCurrent(current - 1);
    } else if (key === "n") {
      const note = steps[current] && steps[current].querySelector("details.note");
      if (note) {
        note.open = true;
        note.querySelector("textarea").focus();
      }
    } else if (key === "b") {
      badProblem.checked = !badProblem.checked;
      changed();
    } else if (key === "r") {
      cycleFinishReason();
    } else if (key === "S") {
      save();
    } else if (key === "Enter") {
      submitWith("submit");
    } else if (key === "X") {
      skip();
    } else if (key === "?") {
      keysHelp.open = !keysHelp.open;
    } else {
      handled = false;
    }
    if (handled) {
      event.preventDefault();
    }
  });

  form.addEventListener("change", (event) => {
    if (event.target.type === "radio" && event.target.name.startsWith("rating_")) {
      const step = event.target.closest("li.step");
      applyStopRule();
      setCurrent(steps.indexOf(step), false);
    }
    changed();
  });
  form.addEventListener("input", changed);
  form.addEventListener("click", (event) => {
    const step = event.target.closest("li.step");
    if (step) {
      setCurrent(steps.indexOf(step), false);
    }
  });
  form.addEventListener("submit", () => {
    submitting = true;
    clearTimeout(saveTimer);
  });
  if (skipForm) {
    // No save may follow the skip (on leaving the page): the one before it is the draft kept.
    skipForm.addEventListener("submit", skipAfterSave);
  }
  form.addEventListener("focusin", (event) => {
    if (event.target instanceof HTMLTextAreaElement) {
      showHint("note");
    }
  });
  form.addEventListener("focusout", (event) => {
    if (event.target instanceof HTMLTextAreaElement) {
      showHint(null);
    }
  });
  document.addEventListener("mousemove", () => {
    active = true;
  });
  document.addEventListener("scroll", () => {
    active = true;
  });

  // Hidden: save now (the time so far counts). Shown again: save with "resume" (the hidden time does not count).
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      hiddenSince = Date.now();
      savedWhileHidden = true;
      save({ keepalive: true });
    } else {
      if (hiddenSince !== null) {
        hiddenMs += Date.now() - hiddenSince;
        hiddenSince = null;
      }
      savedWhileHidden = false;
      save({ resume: true });
    }
  });
  window.addEventListener("pagehide", () => {
    if (!submitting && !savedWhileHidden) {
      save({ keepalive: true });
    }
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) {
      submitting = false;
      save({ resume: true }); // back from the browser's cache: count from now
    }
  });
  setInterval(() => {
    if (!document.hidden && (dirty || active)) {
      save();
    }
  }, SAVE_EVERY_MS);

  setInterval(() => {
    const hidden = hiddenMs + (hiddenSince !== null ? Date.now() - hiddenSince : 0);
    const seconds = Math.max(0, Math.round(secondsBefore + (Date.now() - shownAt - hidden) / 1000));
    const minutes = Math.floor(seconds / 60);
    const hours = Math.floor(minutes / 60);
    const mm = String(minutes % 60).padStart(hours ? 2 : 1, "0");
    const ss = String(seconds % 60).padStart(2, "0");
    timer.textContent = hours ? `${hours}:${mm}:${ss}` : `${mm}:${ss}`;
    const expiresAt = form.dataset.leaseExpiresAt;
    if (expiresAt && Date.parse(expiresAt) <= Date.now()) {
      showLease(null);
    }
  }, 1000);

  if (form.dataset.leaseExpiresAt) {
    showLease(form.dataset.leaseExpiresAt);
  }
  applyStopRule();
  const firstOpen = steps.findIndex((step) => !step.classList.contains("after-error") && ratingOf(step) === "");
  setCurrent(firstOpen === -1 ? 0 : firstOpen, false);
})();
