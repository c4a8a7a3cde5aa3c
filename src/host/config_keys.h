/* config_keys.h - the key table of config.c as the relation checks (config_relations.c) read it:
 * a key's value written as its INI text, which key of an alias pair the config set, an enum
 * value's name. Internal to the library. */
#ifndef BIOFLEX_CONFIG_KEYS_H
#define BIOFLEX_CONFIG_KEYS_H

#include <stddef.h>

#include "bioflex/config.h"

/* A small append-only text buffer: bf_text_add writes past the end are dropped, never overflow. */
typedef struct bf_text {
    char *buf;
    size_t size, len;
} bf_text;
bf_text bf_text_on(char *buf, size_t size); /* empties buf */
void bf_text_add(bf_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The keys in table order: section and name of key i, 0 <= i < bf_config_key_count(). */
int bf_config_key_count(void);
const char *bf_config_key_section(int i);
const char *bf_config_key_name(int i);
/* cfg's value of [section] key as a config line would write it, into buf; NULL for an unknown key. */
const char *bf_config_value_text(const bf_config *cfg, const char *section, const char *key, char *buf, size_t size);
/* The name the config gave the key: its alias (spiking_decay for decay) where that is what was set. */
const char *bf_config_name_as_set(const bf_config *cfg, const char *section, const char *key);
/* Where the key got its value: a file line (> 0), --set (-1) or its default (0). */
int bf_config_key_line(const bf_config *cfg, const char *section, const char *key);
/* The name of an enum key's value ("lif" for [spiking] neuron), or NULL. */
const char *bf_config_enum_text(const char *section, const char *key, int value);
/* The relations between keys that must hold (bf_config_validate's second part): the first that
 * does not, as a BF_ERR_CONFIG error naming its keys. config_relations.c. */
bf_status bf_config_check_relations(const bf_config *cfg);

#endif
