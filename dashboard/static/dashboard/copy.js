// Copy buttons: each copies the text of the element its data-copy names.
document.querySelectorAll("button[data-copy]").forEach((button) => {
  button.hidden = !navigator.clipboard;
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    const status = document.getElementById(`${button.dataset.copy}-copied`);
    try {
      await navigator.clipboard.writeText(source.textContent.trim());
      status.textContent = "Copied.";
    } catch (error) {
      status.textContent = "Could not copy: select the text and copy it.";
    }
  });
});
