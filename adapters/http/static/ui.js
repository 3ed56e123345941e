// The page around the timeline: the status pill, notices, the composer's size, scrolling, and
// length limits on fields counted the way the server counts.

import { $, state } from "./state.js";
import { charCount } from "./rules.js";

export function setStatus(kind, text) {
  const status = $("status");
  status.dataset.state = kind;
  status.textContent = text;
}

/** Shows `text` above the composer for a few seconds, or until cleared when `sticky`. */
export function showNotice(text, sticky = false) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(state.noticeTimer);
  if (!sticky) state.noticeTimer = setTimeout(() => { notice.hidden = true; }, 6000);
}

export function clearNotice() {
  clearTimeout(state.noticeTimer);
  $("notice").hidden = true;
}

export function autosize(textarea) {
  textarea.style.height = "auto";
  textarea.style.height = `${Math.min(textarea.scrollHeight, 160)}px`;
}

export function isNearBottom() {
  const t = $("timeline");
  return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
}

export function scrollToBottom() {
  const t = $("timeline");
  t.scrollTop = t.scrollHeight;
}

/**
 * Keeps `field` to `max` Unicode scalar values, as `maxlength` would if it did not count UTF-16
 * units: what was just inserted (ending at the caret) is cut, not the end of the text.
 * `onCut` runs when something was cut.
 */
export function capChars(field, max, onCut = () => {}) {
  const cap = () => {
    const excess = charCount(field.value) - max;
    if (excess <= 0) return;
    const caret = field.selectionEnd ?? field.value.length;
    const before = [...field.value.slice(0, caret)];
    const kept = before.slice(0, Math.max(0, before.length - excess)).join("");
    field.value = kept + field.value.slice(caret);
    if (charCount(field.value) > max) field.value = [...field.value].slice(0, max).join("");
    const at = Math.min(kept.length, field.value.length);
    field.setSelectionRange(at, at);
    onCut();
  };
  // Mid-composition text is not final (an IME may still replace it): cap when it is.
  field.addEventListener("input", (event) => { if (!event.isComposing) cap(); });
  field.addEventListener("compositionend", cap);
}
