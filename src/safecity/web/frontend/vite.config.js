// Vite build of the command centre: one page, its assets under /ui/ (served by safecity.web), no CDN.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    chunkSizeWarningLimit: 1500,
    sourcemap: false,
  },
});
