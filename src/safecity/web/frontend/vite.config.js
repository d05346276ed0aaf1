// Vite build of the command centre: one page, its assets under /ui/ (served by safecity.web), no CDN.
// src/bench/index.html is the UI bench's page (bench/ui.py, served at /ui/src/bench/index.html): the moving-objects
// layer under load, not linked from the app.
import { resolve } from "node:path";
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 1500,
    sourcemap: false,
    rollupOptions: {
      input: { main: resolve(import.meta.dirname, "index.html"), bench: resolve(import.meta.dirname, "src/bench/index.html") },
    },
  },
});
