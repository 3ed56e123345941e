// The people list as a drawer at phone width. Closed, it is inert (out of the tab order and the
// accessibility tree, not only off screen); Escape closes it, and focus goes back to the button
// that opened it.

import { $ } from "./state.js";

// Matches the stylesheet's phone breakpoint, where the list stops being a column.
const PHONE = window.matchMedia("(max-width: 720px)");

let open = false;

function render() {
  const people = $("people");
  people.classList.toggle("open", open);
  people.inert = PHONE.matches && !open;
  $("toggle-people").setAttribute("aria-expanded", String(open));
}

function openDrawer() {
  open = true;
  render();
  $("people").focus();
}

/** Closes the drawer; with `returnFocus`, focus goes back to its button. */
export function closeDrawer(returnFocus = false) {
  if (!open) return;
  open = false;
  render();
  if (returnFocus && PHONE.matches) $("toggle-people").focus();
}

export function initDrawer() {
  $("toggle-people").addEventListener("click", () => (open ? closeDrawer(true) : openDrawer()));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && open) {
      event.preventDefault();
      closeDrawer(true);
    }
  });
  PHONE.addEventListener("change", render);
  render();
}
