/* test_butd_chbn.c - Counter-Hebb with batch-norm ([butd] ch_bn) on the CPU backend
 * (butd_chbn_cases.h), and the config relation: ch_bn applies with batch_norm = true and
 * learning = counter_hebb. */
#include "bioflex/config.h"
#include "butd_chbn_cases.h"

static void config_relations(void) {
    static const struct {
        const char *sets[4];
        const char *says; /* NULL: valid */
    } cases[] = {
        {{"butd.network=resnet18", "butd.batch_norm=true", "butd.learning=counter_hebb"}, NULL},
        {{"butd.network=resnet18", "butd.batch_norm=true", "butd.learning=counter_hebb", "butd.ch_bn=independent"}, NULL},
        {{"butd.network=resnet18", "butd.batch_norm=true", "butd.learning=backprop", "butd.ch_bn=independent"},
         "[butd] ch_bn = independent applies with [butd] batch_norm = true and [butd] learning = counter_hebb only"},
        {{"butd.network=resnet18", "butd.learning=counter_hebb", "butd.ch_bn=independent"},
         "[butd] ch_bn = independent applies with [butd] batch_norm = true"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        bf_config cfg;
        bf_config_defaults(&cfg);
        CHECK_OK(bf_config_set(&cfg, "data.dataset=cifar10"));
        for (int j = 0; j < 4 && cases[k].sets[j]; j++) CHECK_OK(bf_config_set(&cfg, cases[k].sets[j]));
        bf_status s = bf_config_validate(&cfg);
        if (cases[k].says)
            CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), cases[k].says), "config case %zu refused: %s", k,
                  bf_last_error());
        else
            CHECK(s == BF_OK, "config case %zu valid: %s", k, s == BF_OK ? "" : bf_last_error());
    }
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK(cfg.butd.ch_bn == 0, "ch_bn defaults to exact");
    char text[1024];
    CHECK_OK(bf_config_set(&cfg, "butd.ch_bn=independent"));
    bf_config_describe_learning(&cfg, text, sizeof text);
    CHECK(strstr(text, "ch_bn") != NULL, "the learning description names ch_bn: %s", text);
}

int main(void) {
    config_relations();
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    run_chbn_cases(b);
    bf_backend_destroy(b);
    return bf_test_finish();
}
