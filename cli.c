/* cli.c - the table-driven command-line parser of train and infer (see cli.h). */
#include "cli.h"
#include "resnet.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void cli_defaults(const CliProgram *p) {
    for (int i = 0; i < p->n_options; i++)
        if (p->options[i].kind != CLI_SECTION) cli_set(&p->options[i], p->options[i].def);
}

const CliOption *cli_find(const CliProgram *p, const char *name) {
    size_t len = strcspn(name, "=");
    for (int i = 0; i < p->n_options; i++) {
        const CliOption *o = &p->options[i];
        if (o->kind != CLI_SECTION && strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    }
    return NULL;
}

static int in_range(const CliOption *o, double x) {
    if (!(o->flags & CLI_RANGE)) return 1;
    return (x >= o->lo && x <= o->hi) || ((o->flags & CLI_ZERO_OK) && x == 0);
}

int cli_set(const CliOption *o, const char *v) {
    char *end = NULL;
    double x = 0;
    switch (o->kind) {
    case CLI_STR: *(const char **)o->dest = v; return 0;
    case CLI_INT:
    case CLI_FLAG:
        errno = 0;
        x = (double)strtol(v, &end, 10);
        if (errno || end == v || *end || x < -2147483647.0 || x > 2147483647.0) break;
        if (o->kind == CLI_FLAG && x != 0 && x != 1) break;
        if (!in_range(o, x)) break;
        *(int *)o->dest = (int)x;
        return 0;
    case CLI_FLOAT:
        errno = 0;
        x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || !isfinite((float)x)) break;
        if (!in_range(o, x)) break;
        *(float *)o->dest = (float)x;
        return 0;
    case CLI_SECTION: break;
    }
    if (o->kind == CLI_FLAG) {
        rn_set_error("--%s: expected 0 or 1 (or nothing: 1), found '%s'", o->name, v);
        return -1;
    }
    const char *what = o->kind == CLI_FLOAT ? "a number" : "an integer";
    if (o->flags & CLI_RANGE)
        rn_set_error("--%s: expected %s in [%.10g, %.10g]%s, found '%s'", o->name, what, o->lo,
                     o->hi, o->flags & CLI_ZERO_OK ? " (or 0: the default)" : "", v);
    else
        rn_set_error("--%s: expected %s, found '%s'", o->name, what, v);
    return -1;
}

int cli_parse(const CliProgram *p, int argc, char **argv, const char **operands, int *n_operands,
              CliVisit visit, void *ctx) {
    if (n_operands) *n_operands = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            cli_help(p, stdout);
            return CLI_EXIT;
        }
        if (!strcmp(a, "--version")) {
            cli_version(p->prog, stdout);
            return CLI_EXIT;
        }
        if (!strcmp(a, "--list-archs")) {
            cli_list_archs(stdout);
            return CLI_EXIT;
        }
        if (strncmp(a, "--", 2) != 0 || !a[2]) {
            if (p->operands && operands && (a[0] != '-' || !a[1])) {
                operands[(*n_operands)++] = a;
                continue;
            }
            rn_set_error("unexpected argument '%s'%s", a,
                         p->operands ? "" : " (options start with --)");
            return CLI_USAGE;
        }
        const CliOption *o = cli_find(p, a + 2);
        if (!o) {
            rn_set_error("unknown option '%.*s'", (int)strcspn(a, "="), a);
            return CLI_USAGE;
        }
        const char *eq = strchr(a, '=');
        const char *v = eq ? eq + 1 : NULL;
        if (!v && o->kind == CLI_FLAG) v = "1";
        if (!v) {
            if (i + 1 >= argc) {
                rn_set_error("--%s needs a value", o->name);
                return CLI_USAGE;
            }
            v = argv[++i];
        }
        if (cli_set(o, v) != 0) return CLI_USAGE;
        if (visit) visit(ctx, o, v);
    }
    return CLI_OK;
}

int cli_usage_error(const CliProgram *p) {
    fprintf(stderr, "error: %s (see %s --help)\n", rn_error(), p->prog);
    return 2;
}

void cli_short_usage(const CliProgram *p, FILE *f) {
    fprintf(f, "%s", p->usage);
    fprintf(f, "see %s --help for the options, %s --list-archs for the architectures\n", p->prog,
            p->prog);
}

/* "  --name X   help [default: d]", the help word-wrapped at 96 columns ("[default: none]"
 * for an empty default, unless the help says "required" or gives its own "(default: ...)"). */
static void print_option(const CliOption *o, FILE *f) {
    char left[64];
    snprintf(left, sizeof left, "--%s%s", o->name,
             o->kind == CLI_FLAG  ? ""
             : o->kind == CLI_STR ? " S"
             : o->kind == CLI_INT ? " N"
                                  : " X");
    Buf text = {0};
    buf_printf(&text, "%s", o->help);
    if (o->kind == CLI_FLAG)
        buf_printf(&text, " [default: %s]", strcmp(o->def, "1") == 0 ? "on" : "off");
    else if (o->def && o->def[0])
        buf_printf(&text, " [default: %s]", o->def);
    else if (strncmp(o->help, "required", 8) != 0 && !strstr(o->help, "(default: "))
        buf_printf(&text, " [default: none]");
    fprintf(f, "  %-22s", left);
    int col = 24;
    if ((int)strlen(left) > 22) {
        fprintf(f, "\n%24s", "");
    }
    for (const char *w = text.data; *w;) {
        while (*w == ' ') w++;
        int len = (int)strcspn(w, " ");
        if (!len) break;
        if (col + 1 + len > 96 && col > 24) {
            fprintf(f, "\n%24s", "");
            col = 24;
        }
        fprintf(f, " %.*s", len, w);
        col += 1 + len;
        w += len;
    }
    fprintf(f, "\n");
    buf_free(&text);
}

void cli_help(const CliProgram *p, FILE *f) {
    fprintf(f, "%s", p->usage);
    if (p->about) fprintf(f, "\n%s", p->about);
    for (int i = 0; i < p->n_options; i++) {
        if (p->options[i].kind == CLI_SECTION)
            fprintf(f, "\n%s:\n", p->options[i].name);
        else
            print_option(&p->options[i], f);
    }
    fprintf(f, "\nEvery program:\n"
               "  -h, --help              this list\n"
               "  --version               version and build\n"
               "  --list-archs            the architectures and their preprocessing defaults\n"
               "Exit status: 0 done, 1 the job failed, 2 a usage error (nothing written).\n");
    if (p->epilog) p->epilog(f);
}

void cli_version(const char *prog, FILE *f) {
#ifdef _OPENMP
    const char *omp = "OpenMP";
#else
    const char *omp = "no OpenMP";
#endif
    fprintf(f, "%s (resnet-c) %s; %s, %s\n", prog, RN_VERSION, simd_name(), omp);
}

void cli_list_archs(FILE *f) {
    fprintf(f, "%-18s %-14s %5s %6s  %-12s %s\n", "architecture", "family", "size", "crop",
            "preprocess", "classifier");
    for (int i = 0; i < arch_count(); i++) {
        const ArchSpec *a = arch_at(i);
        fprintf(f, "%-18s %-14s %5d %6.3f  %-12s %s\n", a->name, a->family, a->size, a->crop_pct,
                a->preprocess, a->classifier);
    }
}
