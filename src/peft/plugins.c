/*
 * plugins.c: PEFT methods from shared objects.
 *
 * Each directory of the plugin path is searched for *.so files, in this order: --plugin-path,
 * $LAVINIA_PLUGIN_PATH (both colon-separated), $XDG_DATA_HOME/lavinia/plugins (default
 * ~/.local/share/lavinia/plugins), and the installed plugin directory. Empty components are
 * skipped, so the current directory is never searched unless named. A plugin exports
 * lv_peft_plugin(), which returns its methods; each is registered as a built-in is. What is
 * refused (no entry point, a wrong ABI, a duplicate name, a malformed key table) is said in one
 * line naming the file, and loading goes on with the next.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lavinia/error.h"
#include "peft/adapter.h"

#ifndef LV_PLUGIN_DIR
#define LV_PLUGIN_DIR "/usr/local/lib/lavinia/plugins"
#endif

#define MAX_PLUGINS 256

static void *handles[MAX_PLUGINS];
static char *loaded[MAX_PLUGINS];        /* real paths, so a file is loaded once */
static int n_loaded;

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* one plugin file; 1 when it added methods, 0 when refused (said on stderr) */
static int load_one(const char *path)
{
    char *real = realpath(path, NULL);
    if (!real)
        return 0;
    for (int i = 0; i < n_loaded; i++)
        if (strcmp(loaded[i], real) == 0) {
            free(real);
            return 0;
        }
    if (n_loaded == MAX_PLUGINS) {
        fprintf(stderr, "lavinia: plugin %s: more than %d plugins; not loaded\n", path,
                MAX_PLUGINS);
        free(real);
        return 0;
    }
    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "lavinia: plugin %s: %s\n", path, dlerror());
        free(real);
        return 0;
    }
    lv_peft_plugin_fn fn;
    *(void **)&fn = dlsym(h, LV_PEFT_PLUGIN_SYMBOL);
    const struct lv_peft_method *const *list = fn ? fn() : NULL;
    if (!list) {
        fprintf(stderr, "lavinia: plugin %s: %s; not a lavinia plugin\n", path,
                fn ? "lv_peft_plugin() returned no methods" : "no lv_peft_plugin symbol");
        dlclose(h);
        free(real);
        return 0;
    }
    int added = 0;
    for (int i = 0; list[i] && i < 64; i++) {
        if (lv_peft_register(list[i], path) == LV_OK)
            added++;
        else
            fprintf(stderr, "lavinia: plugin %s\n", lv_errmsg());
    }
    /* kept open even when nothing was added: a method may have been registered before a
     * later one of the same file was refused */
    handles[n_loaded] = h;
    loaded[n_loaded++] = real;
    return added > 0;
}

static int load_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char **names = NULL;
    int n = 0, cap = 0, added = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (k < 4 || strcmp(e->d_name + k - 3, ".so") != 0 || e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, (size_t)cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = malloc(strlen(dir) + k + 2)))
            break;
        sprintf(names[n++], "%s/%s", dir, e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name);   /* the same order on every run */
    for (int i = 0; i < n; i++) {
        added += load_one(names[i]);
        free(names[i]);
    }
    free(names);
    return added;
}

/* each non-empty component of a colon-separated list */
static int load_path(const char *list)
{
    int added = 0;
    for (const char *p = list; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t k = colon ? (size_t)(colon - p) : strlen(p);
        if (k > 0 && k < 4096) {
            char dir[4096];
            memcpy(dir, p, k);
            dir[k] = 0;
            added += load_dir(dir);
        }
        p = colon ? colon + 1 : p + k;
    }
    return added;
}

int lv_peft_load_plugins(const char *cli_path)
{
    lv_peft_builtins();
    int added = load_path(cli_path) + load_path(getenv("LAVINIA_PLUGIN_PATH"));
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    char dir[4200];
    if (xdg && *xdg == '/')
        snprintf(dir, sizeof dir, "%s/lavinia/plugins", xdg);
    else if (home && *home == '/')
        snprintf(dir, sizeof dir, "%s/.local/share/lavinia/plugins", home);
    else
        dir[0] = 0;
    if (dir[0])
        added += load_dir(dir);
    return added + load_dir(LV_PLUGIN_DIR);
}
