/* cli.h - the command-line parser train and infer share (cli.c): each program describes
 * its options in one table, one row per option (name, kind, destination, default, range,
 * help); the table gives parsing, range checks, defaults and --help. An internal header,
 * like platform.h: the programs use it, the library's users need not.
 *
 * Conventions of both programs:
 *   --name VALUE | --name=VALUE | --flag | --flag=0;  -h | --help, --version, --list-archs
 *   exit 0: done; 1: the job failed; 2: a usage error, reported in one line
 *   "error: WHAT (see PROG --help)" before anything is written. */
#ifndef RN_CLI_H
#define RN_CLI_H

#include <stdio.h>

typedef enum { CLI_SECTION, CLI_STR, CLI_INT, CLI_FLOAT, CLI_FLAG } CliKind;

enum {
    CLI_RANGE = 1,     /* a number must lie in [lo, hi] */
    CLI_ZERO_OK = 2,   /* ... or be 0, which means "the default" */
    CLI_PATH = 4,      /* a path or comma-separated paths (train's args.txt keeps them absolute) */
    CLI_NO_RECORD = 8, /* not kept in train's args.txt (one-off switches) */
};

/* One option. dest: const char ** (CLI_STR), int * (CLI_INT, CLI_FLAG: 1 when given bare),
 * float * (CLI_FLOAT). def is parsed like a command-line value (and shown in --help as
 * "[default: def]" unless empty). A CLI_SECTION row is a heading in --help (name only). */
typedef struct {
    const char *name;
    CliKind kind;
    void *dest;
    const char *def;
    double lo, hi;
    unsigned flags;
    const char *help;
} CliOption;

/* Row constructors: one line per option in the programs' tables. */
#define CLI_HEADING(title) {title, CLI_SECTION, NULL, NULL, 0, 0, 0, NULL}
#define CLI_STRING(name, dest, def, flags, help) {name, CLI_STR, dest, def, 0, 0, flags, help}
#define CLI_INTEGER(name, dest, def, lo, hi, flags, help)                                          \
    {name, CLI_INT, dest, def, lo, hi, CLI_RANGE | (flags), help}
#define CLI_NUMBER(name, dest, def, lo, hi, flags, help)                                           \
    {name, CLI_FLOAT, dest, def, lo, hi, CLI_RANGE | (flags), help}
#define CLI_SWITCH(name, dest, def, flags, help) {name, CLI_FLAG, dest, def, 0, 1, flags, help}

typedef struct {
    const char *prog;     /* "train" */
    const char *usage;    /* the usage lines, "usage: ...\n       ...\n" */
    const char *about;    /* a paragraph for --help, or NULL */
    const CliOption *options;
    int n_options;
    const char *operands; /* name of the positional arguments ("IMAGE_OR_DIR"), NULL: none */
    void (*epilog)(FILE *f); /* more --help text (e.g. architectures), or NULL */
} CliProgram;

/* Called for each option set from the command line, with the value as given. */
typedef void (*CliVisit)(void *ctx, const CliOption *o, const char *value);

enum { CLI_OK = 0, CLI_EXIT = 1, CLI_USAGE = -1 };

/* Every option's default into its destination. */
void cli_defaults(const CliProgram *p);
/* Parse argv[0..argc) (no program name). Operands go to operands[] (room for argc) when
 * the program takes them. Returns CLI_OK, CLI_EXIT (--help, --version or --list-archs was
 * printed: exit 0) or CLI_USAGE (rn_error says what; see cli_usage_error). */
int cli_parse(const CliProgram *p, int argc, char **argv, const char **operands, int *n_operands,
              CliVisit visit, void *ctx);
const CliOption *cli_find(const CliProgram *p, const char *name);
/* Set one option from text, with the range checks (0, or -1 with rn_set_error). */
int cli_set(const CliOption *o, const char *value);

/* Prints "error: <rn_error()> (see PROG --help)" on stderr; returns 2 (the exit status). */
int cli_usage_error(const CliProgram *p);
/* The usage lines and "see PROG --help" (a program run without arguments). */
void cli_short_usage(const CliProgram *p, FILE *f);
void cli_help(const CliProgram *p, FILE *f);
void cli_version(const char *prog, FILE *f);
/* Every registered architecture with its preprocessing defaults and classifier. */
void cli_list_archs(FILE *f);

#endif /* RN_CLI_H */
