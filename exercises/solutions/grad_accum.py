"""Reference solution of exercise 07 (gradient accumulation); the statement is in exercises/stubs/grad_accum.py."""


def accumulate_gradients(model, micro_batches):
    model.zero_grad(set_to_none=True)
    total = 0.0
    for x, y in micro_batches:
        loss = model(x, y).loss / len(micro_batches)  # each micro-batch's share of the whole batch's mean
        loss.backward()                               # gradients add up in .grad
        total += loss.item()
    return total
